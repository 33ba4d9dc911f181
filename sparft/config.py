"""``params.yaml``: one section per stage, each validated by the config class beside its code.

The data-selection methods' sections are not listed here: each method's registry entry
(``sparft.curricula.registry``) names its section and class, and registering it adds the
section to ``Params``, so a method of your own is configured like a built-in one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from sparft.arithmetic import ArithmeticConfig
from sparft.cluster import ClusterConfig
from sparft.comparison import CompareConfig
from sparft.curricula.allocation import AllocationConfig
from sparft.curricula.registry import Method, load_plugins, on_register
from sparft.data import DataConfig
from sparft.embed import EmbedConfig
from sparft.evaluation import EvaluateConfig
from sparft.generation import GenerationConfig
from sparft.probe import ProbeConfig
from sparft.prompts import PromptConfig
from sparft.reduce import ReduceConfig
from sparft.selection import SelectConfig
from sparft.tracking_config import TrackingConfig
from sparft.training import TrainConfig

DEFAULT_PARAMS = Path("params.yaml")


class Params(BaseModel):
    """The whole resolved configuration."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig)
    arithmetic: ArithmeticConfig = Field(default_factory=ArithmeticConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    reduce: ReduceConfig = Field(default_factory=ReduceConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    allocation: AllocationConfig = Field(default_factory=AllocationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    methods: list[str] = Field(
        default_factory=list,
        description="Modules to import before reading the rest, each registering a method of "
        "your own (importable from the project folder, e.g. my_methods.toy); installed packages "
        "register theirs through the sparft.methods entry point group.",
    )


CORE_SECTIONS = tuple(Params.model_fields)
METHODS_BEFORE = "allocation"  # method sections go here, as params.yaml lists them


def _add_section(method: Method[Any]) -> None:
    """Give ``Params`` the registered method's section, typed by its config class (pydantic has
    no public way to add a field to a built model: set it and rebuild the validator)."""
    if method.section is None or method.config is None:
        return
    fields = Params.__pydantic_fields__
    if method.section in CORE_SECTIONS:
        raise ValueError(f"method {method.name!r}: section {method.section!r} is sparft's own")
    known = fields.get(method.section)
    if known is not None:
        if known.annotation is not method.config:
            raise ValueError(f"method {method.name!r}: section {method.section!r} is taken")
        return
    info = FieldInfo.from_annotated_attribute(method.config, Field(default_factory=method.config))
    ordered: dict[str, FieldInfo] = {}
    for name, field in fields.items():
        if name == METHODS_BEFORE:
            ordered[method.section] = info
        ordered[name] = field
    Params.__pydantic_fields__ = ordered
    Params.model_rebuild(force=True)


on_register(_add_section)


class ConfigError(ValueError):
    """A params file or override that does not validate; names the key and allowed values."""


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names allowed at ``loc`` (the parent of an unknown key)."""
    current: Any = model
    for part in loc:
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        for arg in getattr(current, "__args__", ()):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                current = arg
    return list(getattr(current, "model_fields", {}))


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in err.errors():
        loc = tuple(item["loc"])
        key = ".".join(str(p) for p in loc)
        if item["type"] == "extra_forbidden":
            allowed = _allowed(Params, loc[:-1])
            lines.append(f"  {key}: unknown key (allowed: {', '.join(allowed)})")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``section.key=value`` with the value read as YAML (numbers, booleans, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}': expected section.key=value")
    parts = key.strip().split(".")
    if len(parts) < 2:
        sections = ", ".join(Params.model_fields)
        raise ConfigError(f"override '{text}': name a section and a key (sections: {sections})")
    return parts, yaml.safe_load(raw) if raw.strip() else None


def as_overrides(values: Mapping[str, Any]) -> list[str]:
    """``{"section.key": value}`` as ``section.key=value`` overrides, the inverse of
    ``parse_override`` (JSON is YAML, so every value reads back as it was)."""
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def dotted(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as ``section.key`` -> value, each value as it was."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(dotted(value, f"{name}."))
        else:
            out[name] = value
    return out


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_params(path: str | Path | None = None, overrides: list[str] | None = None) -> Params:
    """Read ``params.yaml`` (missing file: all defaults), apply overrides, validate."""
    path = Path(path) if path is not None else DEFAULT_PARAMS
    raw: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        raw = loaded or {}
    return validate_params(apply_overrides(raw, overrides or []), str(path))


def validate_params(raw: dict[str, Any], source: str) -> Params:
    """``raw`` (a params mapping, from a file or a ``Params.model_dump``) validated, after
    importing the modules its ``methods`` list names; errors name ``source``."""
    methods = raw.get("methods") or []
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise ConfigError(f"{source}: methods: expected a list of module names, got {methods!r}")
    try:
        load_plugins(methods)
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from err
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from err


def with_overrides(params: Params, overrides: list[str], source: str = "overrides") -> Params:
    """``params`` with ``section.key=value`` overrides applied and validated again: what
    ``load_params(file, overrides)`` gives, without reading the file a second time."""
    if not overrides:
        return params
    return validate_params(apply_overrides(params.model_dump(mode="json"), overrides), source)


def keys_holding(params: Params, value: object) -> list[str]:
    """The dotted keys (``generation.model``) whose value is ``value``: which setting an error
    about a value came from."""

    def walk(node: object, prefix: str) -> list[str]:
        if isinstance(node, dict):
            return [k for key, v in node.items() for k in walk(v, f"{prefix}{key}.")]
        return [prefix[:-1]] if node == value else []

    return walk(params.model_dump(mode="json"), "")


def dump_params(params: Params) -> str:
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
