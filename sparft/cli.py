"""``sparft`` command line: every command reads ``params.yaml`` and takes ``--set`` overrides."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from sparft.checks import Check
from sparft.config import ConfigError, Params, dump_params, keys_holding, load_params
from sparft.data import DataError, FieldMap, load_dataset
from sparft.generation import GenerationError
from sparft.generation.server import ServerStartError
from sparft.io import write_json, write_parquet
from sparft.models import ModelNotAvailableError, list_presets, prepare_model

app = typer.Typer(no_args_is_help=True, help=__doc__, pretty_exceptions_show_locals=False)
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved configuration.")
data_app = typer.Typer(no_args_is_help=True, help="Load data sets into the sparft schema.")
models_app = typer.Typer(no_args_is_help=True, help="List and prepare model presets.")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
console = Console()
err_console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Configuration file.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override: section.key=value (repeatable).")
]
# what the user can fix: a message, not a traceback (a vLLM server that died or did not start too)
USER_ERRORS = (
    ConfigError,
    DataError,
    ModelNotAvailableError,
    FileNotFoundError,
    GenerationError,
    ServerStartError,
)


def _params(path: Path, overrides: list[str] | None) -> Params:
    try:
        return load_params(path, overrides or [])
    except ConfigError as err:
        _fail(err)


def _given(**options: Any) -> dict[str, Any]:
    """The command-line options the user set (not None), as config overrides."""
    return {key: value for key, value in options.items() if value is not None}


def _fail(err: Exception, params: Params | None = None) -> NoReturn:
    """Print the error unwrapped (a file path cut across lines cannot be copied) and exit 2;
    a model that is not there is prefixed with the params keys that name it."""
    model = getattr(err, "model", None)
    keys = keys_holding(params, model) if params is not None and model else []
    where = f"{', '.join(keys)}: " if keys else ""
    console.print(f"[bold red]error:[/] {where}{err}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@config_app.command("show")
def config_show(params: ParamsOpt = Path("params.yaml"), set_: SetOpt = None) -> None:
    """Print the configuration after defaults and overrides, as YAML."""
    console.print(dump_params(_params(params, set_)), highlight=False, markup=False)


def _data_config(
    p: Params,
    spec: str,
    split: str | None,
    fields: list[str] | None,
    on_bad_rows: str | None,
    limit: int | None,
) -> Any:
    update: dict[str, Any] = {"spec": spec, "split": split or None}
    if fields:
        mapping: dict[str, str] = {}
        for item in fields:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--field '{item}': expected schema_field=source_field")
            mapping[key] = value
        base = (p.data.fields or FieldMap()).model_dump()
        update["fields"] = FieldMap.model_validate({**base, **mapping})
    if on_bad_rows:
        update["on_bad_rows"] = on_bad_rows
    if limit:
        update["limit"] = limit
    return type(p.data).model_validate({**p.data.model_dump(), **update})


def _print_reports(reports: list[Any]) -> None:
    """Render a stage's ``Report`` tables (``sparft.stages.stage.Report``)."""
    for report in reports:
        table = Table(title=report.title, show_header=bool(report.columns))
        for i, name in enumerate(report.columns or ("", "")):
            table.add_column(name, justify="left" if i == 0 else "right")
        for row in report.rows:
            table.add_row(*row)
        console.print(table)


@data_app.command("load")
def data_load(
    spec: Annotated[str, typer.Argument(help="Built-in name[:split], local file or HF dataset.")],
    out: Annotated[Path, typer.Option("--out", help="Output parquet file.")],
    split: Annotated[str | None, typer.Option(help="Split (also as SPEC:split).")] = None,
    field: Annotated[
        list[str] | None, typer.Option(help="Field mapping schema=source, e.g. question=problem.")
    ] = None,
    on_bad_rows: Annotated[str | None, typer.Option(help="error or skip.")] = None,
    limit: Annotated[int | None, typer.Option(help="Keep at most this many rows.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Normalise a data set into the sparft schema and write it as parquet."""
    p = _params(params, set_)
    try:
        cfg = _data_config(p, spec, split, field, on_bad_rows, limit)
        frame, report = load_dataset(cfg, p.arithmetic)
    except USER_ERRORS as err:
        _fail(err)
    except ValueError as err:
        _fail(ConfigError(str(err)))
    from sparft.stages.load import report as load_report

    write_parquet(frame, out)
    write_json(report.as_dict(), out.with_suffix(".report.json"))
    data = p.data.model_copy(update={"out": str(out)})
    _print_reports(load_report(report.as_dict(), p.model_copy(update={"data": data})))


@app.command()
def verify(
    spec: Annotated[str, typer.Argument(help="Built-in name[:split], local file or HF dataset.")],
    split: Annotated[str | None, typer.Option(help="Split (also as SPEC:split).")] = None,
    field: Annotated[list[str] | None, typer.Option(help="Field mapping schema=source.")] = None,
    min_agreement: Annotated[
        float, typer.Option(help="Exit 1 when the agreeing share is below this.")
    ] = 0.0,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Check every gold solution against its own gold answer with the answer checker."""
    from sparft.answers import check_gold

    p = _params(params, set_)
    try:
        frame, _ = load_dataset(_data_config(p, spec, split, field, None, None), p.arithmetic)
    except USER_ERRORS as err:
        _fail(err)
    checked, exceptions = 0, []
    for row in track(frame.itertuples(), total=len(frame), description="verifying", transient=True):
        solution = json.loads(row.meta).get("solution")
        if not isinstance(solution, str):
            continue
        checked += 1
        agrees, extracted = check_gold(solution, row.answer)
        if not agrees:
            exceptions.append((row.id, row.answer, extracted))
    if checked == 0:
        _fail(DataError(f"{spec}: no row has a gold solution to verify"))
    share = 1 - len(exceptions) / checked
    console.print(f"{spec}: {checked - len(exceptions)}/{checked} agree ({share:.2%})")
    if exceptions:
        table = Table(title="gold solutions that disagree with their gold answer")
        for name in ("id", "gold answer", "extracted from solution"):
            table.add_column(name, overflow="fold")
        for qid, gold, extracted in exceptions:
            table.add_row(qid, gold, str(extracted))
        console.print(table)
    if share < min_agreement:
        raise typer.Exit(1)


@models_app.command("list")
def models_list() -> None:
    """Presets, whether their packages are installed and whether they are prepared."""
    table = Table(title="model presets")
    for name in ("name", "kind", "installed", "prepared", "path or install command", "online id"):
        table.add_column(name, overflow="fold")
    for row in list_presets():
        where = row.path or (
            "(run: sparft models prepare " + row.name + ")" if row.installed else row.install_hint
        )
        table.add_row(row.name, row.kind, _yes(row.installed), _yes(row.prepared), where, row.hf_id)
    console.print(table)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@models_app.command("prepare")
def models_prepare(
    name: Annotated[str, typer.Argument(help="Preset, local folder or HF id.")],
) -> None:
    """Make a preset loadable offline (GGUF presets are converted once into the cache)."""
    try:
        path = prepare_model(name)
    except USER_ERRORS as err:
        _fail(err)
    console.print(f"{name}: {path}")


@app.command()
def generate(
    prompt: Annotated[list[str], typer.Option(help="Prompt (repeatable).")],
    model: Annotated[str | None, typer.Option(help="Preset, local folder or HF id.")] = None,
    n: Annotated[int, typer.Option(help="Samples per prompt.")] = 1,
    temperature: Annotated[float | None, typer.Option(help="0 for greedy.")] = None,
    max_new_tokens: Annotated[int | None, typer.Option()] = None,
    backend: Annotated[str | None, typer.Option(help="hf, vllm or vllm-server.")] = None,
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Quick look at a model's completions, with the generation section's settings."""
    from sparft.generation import make_backend

    p = _params(params, set_)
    update = _given(
        model=model, backend=backend, temperature=temperature, max_new_tokens=max_new_tokens
    )
    try:
        cfg = type(p.generation).model_validate({**p.generation.model_dump(), **update})
        cfg = cfg.model_copy(update={"model": prepare_model(cfg.model)})
        results = make_backend(cfg).generate(prompt, n=n)
    except USER_ERRORS as err:
        _fail(err, p)
    for text, result in zip(prompt, results, strict=True):
        console.rule(text, style="cyan")
        for i, c in enumerate(result.completions):
            console.print(f"[bold]#{i}[/] ({c.completion_tokens} tokens, {c.finish_reason})")
            console.print(c.text, highlight=False, markup=False)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="Stage to run.")],
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Run one pipeline stage: read its params section and inputs, write its outputs."""
    from sparft.stages import STAGES
    from sparft.tracking import run_stage

    if name not in STAGES:
        _fail(ConfigError(f"unknown stage '{name}' (stages: {', '.join(STAGES)})"))
    p = _params(params, set_)
    start = time.perf_counter()
    try:
        summary = run_stage(STAGES[name], p)
    except USER_ERRORS as err:
        _fail(err, p)
    console.print_json(json.dumps(summary, default=str))
    console.print(f"stage {name} finished in {time.perf_counter() - start:.1f} s")


def _pipeline_flow() -> Any:
    """``flows.pipeline.pipeline``, imported only when a command needs Prefect. Prefect reads its
    settings at import: the STACK notes' defaults are set first."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from flows.pipeline import pipeline

    return pipeline


RunnerOpt = Annotated[
    str,
    typer.Option(
        help="Where the shards of probe, embed and evaluate run: 'local' (this process) or "
        "'ray' (Ray workers through prefect-ray; same results)."
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        help="An existing Ray cluster (e.g. ray://head:10001, or 'auto' on a cluster node); "
        "unset starts a local Ray instance on 127.0.0.1."
    ),
]
WorkersOpt = Annotated[
    int | None, typer.Option(help="Shards per stage; default: the cluster's CPUs / worker CPUs.")
]
WorkerCpusOpt = Annotated[float, typer.Option(help="CPUs each Ray worker takes.")]
WorkerGpusOpt = Annotated[float, typer.Option(help="GPUs each Ray worker takes.")]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="Print the preflight checks and exit: nothing runs, nothing trains."
    ),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Any preflight warning is an error (exit 2): before the flow, and again once the "
        "probe has run, before any training.",
    ),
]
STATUS_STYLE = {"ok": "green", "warn": "yellow", "pending": "dim"}


def _print_checks(checks: list[Check], title: str = "preflight checks") -> None:
    """The preflight checks as a table, warnings in yellow; then each warning as one line and
    their fixes as ``--set`` overrides, never cut across lines (a narrow terminal folds the
    table's cells), so they can be read whole and copied."""
    from rich.markup import escape

    table = Table(title=title)
    for name in ("check", "strategy", "status", "what it found", "clear it with (--set)"):
        table.add_column(name, overflow="fold", no_wrap=name == "status")
    for check in checks:
        style = STATUS_STYLE[check.status]
        table.add_row(
            check.name, escape(check.strategy or "all"), f"[{style}]{check.status}[/]",
            escape(check.message), escape("\n".join(check.overrides())),
            style="yellow" if check.warns else None,
        )  # fmt: skip
    console.print(table)
    warned = [c for c in checks if c.warns]
    if not warned:
        return
    console.print(f"{len(warned)} preflight warning(s):", style="yellow", highlight=False)
    for check in warned:
        console.print(f"  {check.line()}", highlight=False, markup=False, soft_wrap=True)
    sets = " ".join(f"--set {o}" for o in dict.fromkeys(o for c in warned for o in c.overrides()))
    if sets:
        console.print(f"clear them with: {sets}", highlight=False, markup=False, soft_wrap=True)


def _preflight(
    p: Params,
    dry_run: bool,
    strict: bool,
    strategies: list[str] | None = None,
    seeds: list[int] | None = None,
) -> list[Check]:
    """Run and print the preflight checks (``sparft.preflight``) before any flow starts: with
    ``strict`` a warning exits 2, with ``dry_run`` the command ends here (0)."""
    from flows.preflight import checks_for

    try:
        checks = checks_for(p, Path.cwd(), strategies, seeds)
    except ConfigError as err:
        _fail(err)
    _print_checks(checks)
    warned = [c for c in checks if c.warns]
    if strict and warned:
        names = ", ".join(f"{c.name} ({c.strategy or 'all'})" for c in warned)
        _fail(ConfigError(f"preflight (--strict): {len(warned)} warning(s): {names}"))
    if dry_run:
        raise typer.Exit(0)
    return checks


def _print_after_probe(before: list[Check], report: dict[str, Any]) -> None:
    """The checks again as the flow decided them after the probe, if any was pending before."""
    decided = (report.get("preflight") or {}).get("checks")
    if decided and any(c.status == "pending" for c in before):
        checks = [Check.from_dict(c) for c in decided]
        _print_checks(checks, "preflight checks after the probe")


@app.command()
def run(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    runner: RunnerOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = None,
    worker_cpus: WorkerCpusOpt = 1.0,
    worker_gpus: WorkerGpusOpt = 0.0,
    dry_run: DryRunOpt = False,
    strict: StrictOpt = False,
) -> None:
    """Run the pipeline as a Prefect flow of cached stages (on Prefect's ephemeral API, or on the
    server at PREFECT_API_URL), keep dvc.lock in step, and print where the results are. The
    preflight checks print first (--dry-run: only them; --strict: a warning is an error)."""
    p = _params(params, set_)
    pipeline = _pipeline_flow()
    from flows.runners import RunnerSettings

    try:
        RunnerSettings(runner, ray_address, workers, worker_cpus, worker_gpus)
    except ValueError as err:
        _fail(err)
    checks = _preflight(p, dry_run, strict)
    from flows.tasks import stage_status
    from sparft.stages import STAGES

    try:
        report = pipeline(
            params_file=str(params),
            overrides=list(set_ or []),
            runner=runner,
            ray_address=ray_address,
            workers=workers,
            worker_cpus=worker_cpus,
            worker_gpus=worker_gpus,
            strict=strict,
        )
    except USER_ERRORS as err:
        _fail(err, p)
    _print_after_probe(checks, report)
    for name, stage in report["stages"].items():
        console.rule(f"stage {name}")
        seconds = stage["stage_seconds"] if stage["cached"] else stage["seconds"]
        console.print(f"{name} {stage_status(stage['cached'], seconds)}")
        _print_reports(STAGES[name].reports(stage["summary"], p))
    for note in report["notes"]:
        console.print(f"note: {note}", highlight=False)
    _print_where(p, report)


@app.command()
def serve(
    cron: Annotated[
        str, typer.Option(help="Cron schedule, e.g. '0 3 * * *' (every day at 03:00).")
    ] = "0 3 * * *",
    name: Annotated[str, typer.Option(help="Deployment name.")] = "scheduled",
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Serve the pipeline as a scheduled Prefect deployment until interrupted; the params file,
    overrides and this folder are its parameters. Needs a server (PREFECT_API_URL)."""
    _params(params, set_)  # a bad setting fails now, not at 3 am
    pipeline = _pipeline_flow()
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        console.print(
            "note: PREFECT_API_URL is not set, so this serves on a temporary server that stops "
            "with it. For a lasting schedule: prefect server start --host 127.0.0.1, then "
            "export PREFECT_API_URL=http://127.0.0.1:4200/api",
            highlight=False,
        )
    parameters = {
        "params_file": str(params.resolve()),
        "overrides": list(set_ or []),
        "project_dir": str(Path.cwd()),
    }
    pipeline.serve(name=name, cron=cron, parameters=parameters, tags=["sparft"])


def _print_where(p: Params, report: dict[str, Any] | None = None) -> None:
    """Where a finished pipeline run left its results (what each stage declares)."""
    from sparft.stages import STAGES

    table = Table(title="where the results are", show_header=False)
    for stage in STAGES.values():
        for what, where in stage.where:
            table.add_row(what, where)
    if p.tracking.enabled:
        uri = os.environ.get("MLFLOW_TRACKING_URI", p.tracking.uri)
        table.add_row(
            "MLflow", f"{uri}, experiment '{p.tracking.experiment}': mlflow ui "
            f"--backend-store-uri {uri} --host 127.0.0.1"
        )  # fmt: skip
        if report and report.get("mlflow_run_id"):
            table.add_row("MLflow parent run", report["mlflow_run_id"])
    if report and report.get("flow_run_id"):
        where = report.get("flow_run_url") or (
            "Prefect's ephemeral API (database in PREFECT_HOME): browse it with "
            "prefect server start --host 127.0.0.1, then http://127.0.0.1:4200"
        )
        table.add_row(
            "Prefect flow run", f"{report['flow_run_name']} ({report['flow_run_id']}): {where}"
        )
    console.print(table)


@app.command("dvc-yaml")
def dvc_yaml(
    out: Annotated[Path, typer.Option(help="Where to write it.")] = Path("dvc.yaml"),
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if the file differs; write nothing.")
    ] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Write dvc.yaml from the stage declarations (deps: the data each stage reads and the
    source files its module imports). The params file's `methods` list adds the sections and
    modules of methods of your own to the train stage."""
    from flows.dvc_state import render_dvc_yaml
    from sparft.io import atomic_path

    _params(params, None)
    text = render_dvc_yaml()
    current = out.read_text() if out.is_file() else None
    if check:
        if current != text:
            console.print(f"{out} is not current: run sparft dvc-yaml", soft_wrap=True)
            raise typer.Exit(1)
        console.print(f"{out} is current", soft_wrap=True)
        return
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    console.print(f"wrote {out}" + (" (unchanged)" if current == text else ""), soft_wrap=True)


@app.command("docs-reference")
def docs_reference(
    root: Annotated[
        Path, typer.Option(help="Project folder; the files go to its docs/reference.")
    ] = Path("."),
    check: Annotated[
        bool, typer.Option("--check", help="Exit 1 if a file differs; write nothing.")
    ] = False,
) -> None:
    """Write docs/reference/cli.md and docs/reference/params.md from the typer app and the
    config classes (every command with its options; every params key with its type, default,
    constraints and description)."""
    from sparft.reference import FILES, REFERENCE_DIR, REGENERATE, stale, write_reference

    if check:
        outdated = stale(root, app)
        for rel in outdated:
            console.print(f"{root / rel} is not current: run {REGENERATE}", soft_wrap=True)
        if outdated:
            raise typer.Exit(1)
        console.print(f"{root / REFERENCE_DIR} is current", soft_wrap=True)
        return
    written = write_reference(root, app)
    for rel in FILES:
        note = "" if rel in written else " (unchanged)"
        console.print(f"wrote {root / rel}{note}", soft_wrap=True)


@app.command("eval")
def eval_(
    model: Annotated[
        str | None,
        typer.Option(help="'trained', a preset, a model or LoRA adapter folder, or a HF id."),
    ] = None,
    benchmark: Annotated[
        list[str] | None,
        typer.Option(
            help="gsm8k, math500, aime24, aime25, arithmetic-heldout, or a jsonl/json/parquet/csv "
            "file (repeatable)."
        ),
    ] = None,
    n: Annotated[int | None, typer.Option(help="Samples per question.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 for greedy.")] = None,
    limit: Annotated[
        int | None, typer.Option(help="Seeded sample of questions per benchmark.")
    ] = None,
    max_new_tokens: Annotated[int | None, typer.Option()] = None,
    base: Annotated[
        bool | None, typer.Option("--base/--no-base", help="Also evaluate generation.model.")
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for results.parquet, metrics.json, eval_accuracy.png (not data/eval, "
            "which the evaluate stage writes for DVC)."
        ),
    ] = Path("data/eval-cli"),
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
) -> None:
    """Accuracy (pass@1, pass@k) of a model, and of the base model, on math benchmarks."""
    from pydantic import ValidationError

    from sparft.evaluation import EvaluateConfig
    from sparft.stages.evaluate import report, run_evaluation

    p = _params(params, set_)
    update = _given(
        model=model,
        benchmarks=benchmark,
        n=n,
        temperature=temperature,
        limit=limit,
        max_new_tokens=max_new_tokens,
        include_base=base,
    )
    try:
        cfg = EvaluateConfig.model_validate({**p.evaluate.model_dump(), **update})
        summary = run_evaluation(p, cfg, out, out / "eval_accuracy.png")
    except ValidationError as err:
        _fail(ConfigError("; ".join(f"evaluate: {e['msg']}" for e in err.errors())))
    except USER_ERRORS as err:
        _fail(err)
    _print_reports(report(summary, p))
    console.print(f"wrote {summary['results']}, {out / 'metrics.json'} and {summary['plot']}")


@app.command("summarise-runs")
def summarise_runs_command(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment; default: tracking.experiment.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Comparison plot (PNG).")] = Path(
        "data/plots/compare.png"
    ),
) -> None:
    """Summarise the finished pipeline runs recorded in MLflow, per strategy: the trained
    model's held-out accuracy (mean ± sd over runs), data size, steps and wall time. (No test:
    for seed-level statistics use compare-strategies or analyse.)"""
    from sparft.plots import plot_comparison
    from sparft.tracking import pipeline_runs, summarise_runs

    p = _params(params, set_)
    try:
        runs = pipeline_runs(p.tracking, experiment)
    except ValueError as err:
        _fail(err)
    if runs.empty:
        _fail(ValueError("no finished pipeline run with train and evaluate stages to compare"))
    summary = summarise_runs(runs)
    benchmarks = [c[5:] for c in summary.columns if c.startswith("mean:")]
    table = Table(title=f"{len(runs)} pipeline runs ({p.tracking.uri})")
    for name in ("strategy", "runs", "training qs", "steps", *benchmarks, "wall s"):
        table.add_column(name, justify="left" if name == "strategy" else "right")
    for row in summary.to_dict("records"):
        cells = [f"{row[f'mean:{b}']:.3f} ± {row[f'sd:{b}']:.3f}" for b in benchmarks]
        table.add_row(
            str(row["strategy"]), str(row["runs"]), f"{row['training_questions']:.0f}",
            f"{row['steps']:.0f}", *cells, f"{row['wall_s']:.0f}",
        )  # fmt: skip
    console.print(table)
    console.print(f"plot: {plot_comparison(runs, out)}")


@app.command("compare", deprecated=True)
def compare_alias(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment.")] = None,
    out: Annotated[Path, typer.Option(help="Comparison plot (PNG).")] = Path(
        "data/plots/compare.png"
    ),
) -> None:
    """Deprecated name of `summarise-runs` (kept for one release)."""
    err_console.print("sparft compare is deprecated: use sparft summarise-runs", soft_wrap=True)
    summarise_runs_command(params, set_, experiment, out)


def _or_never(value: Any) -> str:
    return "never" if value is None else str(value)


def _cell(value: float | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


STATISTICS_NOTE = (
    "verdict: ahead/behind only when the seed-level interval excludes 0 and the exact "
    "sign-flip p < 0.05 (needs >= 6 seeds); MDE: the difference these seeds detect with 80% power"
)


@app.command()
def analyse(
    path: Annotated[Path, typer.Argument(help="A compare-strategies report (strategies.json).")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the statistics here (JSON).")
    ] = None,
    pair: Annotated[
        list[str] | None,
        typer.Option(help="Also test A against B, as A:B (repeatable), e.g. sparft:dots."),
    ] = None,
    baseline: Annotated[str, typer.Option(help="The strategy every other is tested against.")] = (
        "uniform"
    ),
    level: Annotated[
        float | None, typer.Option(help="Confidence level; default: the report's.")
    ] = None,
) -> None:
    """Recompute a saved comparison's seed-level statistics without training: per strategy the
    difference against the baseline with its t interval, exact sign-flip p, probability of
    improvement, verdict, minimum detectable difference and the seeds needed for 3 and 5
    points."""
    from sparft.comparison import (
        analyse_report,
        format_interval,
        parse_pair,
        power_lines,
        target_line,
    )

    try:
        report = json.loads(path.read_text())
        result = analyse_report(
            report, level, pairs=[parse_pair(p) for p in pair or []], baseline=baseline
        )
    except (ValueError, OSError) as err:
        _fail(ValueError(f"{path}: {err}"))
    result["source"] = str(path)
    settings = result["settings"]
    table = Table(
        title=f"{path}: {settings.get('model', '?')}, {settings.get('max_steps', '?')} steps, "
        f"{settings.get('heldout_questions', '?')} held-out questions, at the last common check"
    )
    columns = (
        "strategy", "seeds", "accuracy (interval)", f"vs {baseline} (interval)", "p",
        "p Holm", "P(better)", "verdict", "MDE", "seeds for 3/5 pts",
    )  # fmt: skip
    for name in columns:
        table.add_column(name, justify="left" if name in ("strategy", "verdict") else "right")
    rows = [(name, entry.get("vs_uniform"), entry) for name, entry in result["strategies"].items()]
    rows += [(name, test, None) for name, test in result["pairs"].items()]
    for name, vs, entry in rows:
        acc = entry["accuracy"] if entry else None
        needed = (vs or {}).get("seeds_needed", {})
        vs_ci = format_interval(vs["ci"], "+.2f") if vs else None
        table.add_row(
            name, str(len(vs["seeds"]) if vs else len((entry or {}).get("seeds", []))),
            "" if acc is None else f"{acc['mean']:.3f} {format_interval(acc['ci'], '.2f') or ''}",
            "" if vs is None else f"{vs['difference']:+.3f} {vs_ci or ''}",
            _cell(vs["p_value"] if vs else None, ".3f"),
            _cell((vs or {}).get("p_value_holm"), ".3f"),
            _cell(vs["probability_of_improvement"] if vs else None, ".2f"),
            vs["verdict"] if vs else ("baseline" if entry else "no common seed"),
            _cell(vs["mde"] if vs else None, ".3f"),
            "/".join(_or_never(needed.get(k)) for k in ("0.03", "0.05")) if vs else "",
        )  # fmt: skip
    console.print(table)
    console.print(STATISTICS_NOTE, highlight=False)
    if not all(e["question_level"] for e in result["strategies"].values()):
        console.print(
            "note: this report kept per-seed accuracies only (written before per-question "
            "correctness was saved): the intervals leave the question set's sampling error out",
            highlight=False,
        )
    for line in _parts_lines(result["merged"]):
        console.print(line, highlight=False)
    console.print(_preflight_line(result["preflight"]), highlight=False)
    for line in (result["preflight"] or {}).get("warnings", []):
        console.print(f"  {line}", highlight=False)
    if result["power"] is not None:
        for line in power_lines(result["power"]):
            console.print(line, highlight=False)
        target = result["power"]["target_mde"]
        console.print(target_line(result["strategies"], target), highlight=False)
    if json_out is not None:
        write_json(result, json_out)
        console.print(f"wrote {json_out}")


@app.command("merge-reports")
def merge_reports_command(
    reports: Annotated[
        list[Path], typer.Argument(help="compare-strategies reports of parts of one design.")
    ],
    out: Annotated[Path, typer.Option(help="The merged report (JSON); its plot beside it.")] = (
        Path("data/compare/merged.json")
    ),
) -> None:
    """Merge the reports of a comparison run in parts (other strategies or seeds, on other
    machines or days) into one, summarised as if one flow had trained them all. Refuses parts
    that are not one design: other settings, another content of a file their runs read (the
    probe), other params, or a run in two parts whose checks differ. Then read it with
    `sparft analyse`."""
    from flows.compare_strategies import merged_report, write_report

    try:
        report = merged_report(reports)
    except ValueError as err:
        _fail(err)
    write_report(report, out, out.with_suffix(".png"))
    settings = report["settings"]
    reproduced = report["merged"]["reproduced"]
    console.print(
        f"merged {len(reports)} reports: {', '.join(settings['strategies'])} x seeds "
        f"{settings['seeds']}"
        + (f"; {len(reproduced)} run(s) in two parts reproduced exactly" if reproduced else ""),
        highlight=False,
    )
    for line in _missing_lines(report["merged"]):
        console.print(line, highlight=False)
    console.print(f"wrote {out} and {out.with_suffix('.png')}", highlight=False)


def _parts_lines(merged: dict[str, Any] | None) -> list[str]:
    """Where a merged report's runs came from: each part's seeds, strategies and machine."""
    if not merged:
        return []
    lines = [f"merged from {len(merged['parts'])} parts (sparft merge-reports):"]
    for part in merged["parts"]:
        machine = part.get("machine") or {}
        where = machine.get("gpu") or machine.get("cpu") or "machine not recorded"
        lines.append(
            f"  {part['file']}: seeds {part['seeds']}, {', '.join(part['strategies'])}; {where}"
        )
    if merged["reproduced"]:
        lines.append(f"  {len(merged['reproduced'])} run(s) in two parts, reproduced exactly")
    return lines + _missing_lines(merged)


def _missing_lines(merged: dict[str, Any]) -> list[str]:
    """The design's strategy x seed runs no part has yet (parts run with --part), and the
    source files the parts' training read with other contents."""
    lines = []
    missing = merged.get("missing") or []
    if missing:
        seeds = sorted({m["seed"] for m in missing})
        lines.append(
            f"  not complete: {len(missing)} run(s) of the design missing, at seeds {seeds}"
        )
    differs = merged.get("code_differs") or []
    if differs:
        lines.append(f"  the parts ran other code in {len(differs)} file(s): {', '.join(differs)}")
    return lines


def _preflight_line(preflight: dict[str, Any] | None) -> str:
    """How the preflight checks a report saved came out, in one line."""
    if preflight is None:
        return "preflight: not in this report (written before the checks were kept)"
    statuses = Counter(check.get("status") for check in preflight.get("checks", []))
    counts = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))
    return f"preflight: {len(preflight.get('warnings', []))} warning(s) ({counts or 'no checks'})"


@app.command()
def simulate(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="A strategy (repeatable); default: compare.strategies but dots."),
    ] = None,
    steps: Annotated[int, typer.Option(min=1, help="Training steps per run.")] = 200,
    seeds: Annotated[
        int, typer.Option(min=1, help="Seeds per strategy (0, 1, ...); a verdict needs 6.")
    ] = 6,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report here (JSON).")
    ] = None,
    plot: Annotated[Path, typer.Option(help="Curves and picks (PNG).")] = Path(
        "data/simulate/curves.png"
    ),
    world: Annotated[
        list[str] | None,
        typer.Option(
            help="A setting of the simulated world as KEY=VALUE (repeatable), e.g. "
            "centre=3 spread=6 for a pool mostly too hard; keys: sparft.simulation.World."
        ),
    ] = None,
) -> None:
    """Run strategies on a simulated learner (no model, no TRL): each question has a latent
    solve probability that training on informative groups raises, with transfer within and
    across clusters. Tests what each method's mechanism does under these assumptions, in
    seconds; it is no evidence of how a language model trains (docs/guide/simulation.md)."""
    from rich.progress import Progress

    from sparft.comparison import format_interval
    from sparft.plots import plot_simulation
    from sparft.simulation import NOT_SIMULATED, World
    from sparft.simulation import simulate as run_simulation

    p = _params(params, set_)
    try:
        settings = World.parse(world or [])
    except ValueError as err:
        _fail(err)
    names = strategy or [s for s in p.compare.strategies if s.split("+")[0] not in NOT_SIMULATED]
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("simulating", total=len(names) * seeds)
        try:
            report = run_simulation(
                p, names, steps, range(seeds), settings, progress=lambda *_: bar.advance(task)
            )
        except ValueError as err:
            _fail(err)
    table = Table(title=f"simulated learner: {seeds} seeds x {steps} steps (not a model)")
    for column in (
        "strategy", "accuracy", "vs uniform", "p", "verdict", "at uniform's rollouts",
        "effective ratio", "vs uniform ", "gradient share", "rollouts",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column == "strategy" else "right")

    def versus(test: dict[str, Any] | None, fmt: str) -> str:
        return "" if test is None else f"{test['difference']:{fmt}} ({test['verdict']})"

    for name, entry in report["strategies"].items():
        acc, eff = entry["final_accuracy"], entry["effective_prompt_ratio"]
        vs = entry.get("vs_uniform", {})
        va = vs.get("final_accuracy")
        table.add_row(
            name,
            f"{acc['difference']:.3f} {format_interval(acc['ci'], '.3f') or ''}",
            "" if va is None else f"{va['difference']:+.3f} {format_interval(va['ci']) or ''}",
            "" if va is None else f"{va['p_value']:.3f}",
            "" if va is None else va["verdict"],
            versus(vs.get("accuracy_at_uniform_rollouts"), "+.3f"),
            f"{eff['difference']:.2f}",
            versus(vs.get("effective_prompt_ratio"), "+.2f"),
            f"{entry['gradient_rollout_share']['difference']:.2f}",
            f"{entry['rollouts']:.0f}",
        )
    console.print(table)
    console.print(f"plot: {plot_simulation(report, plot)}")
    if json_out is not None:
        write_json(report, json_out)
        console.print(f"wrote {json_out}")


@app.command("compare-strategies")
def compare_strategies(
    params: ParamsOpt = Path("params.yaml"),
    set_: SetOpt = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option(help="A strategy (repeat for more); default: compare.strategies."),
    ] = None,
    seed: Annotated[
        list[int] | None, typer.Option(help="A seed (repeat for more); default: compare.seeds.")
    ] = None,
    parallel: Annotated[
        int | None, typer.Option(help="Variants trained at once; default: compare.parallel.")
    ] = None,
    pair: Annotated[
        list[str] | None,
        typer.Option(help="Also test A against B, as A:B (repeatable); default: compare.pairs."),
    ] = None,
    part: Annotated[
        bool,
        typer.Option(
            "--part",
            help="Run some of compare's strategies and seeds (--strategy, --seed) as a part of "
            "its design: the seeds and pilot checks are the design's; merge-reports joins parts.",
        ),
    ] = False,
    dry_run: DryRunOpt = False,
    strict: StrictOpt = False,
) -> None:
    """Train every strategy with every seed from one config, check each on one held-out set
    every compare.eval_every steps, and report per strategy the accuracy with its seed-level
    interval, the test against uniform (difference, interval, sign-flip p, verdict, minimum
    detectable difference) and the steps and rollouts to reach uniform's final accuracy
    (data/compare/strategies.json and .png, MLflow, Prefect); preflight checks first."""
    _params(params, set_)
    _pipeline_flow()  # Prefect's settings first
    from flows.compare_strategies import OUT, PLOT
    from flows.compare_strategies import compare_strategies as flow
    from flows.preflight import compare_setup
    from sparft.comparison import format_interval, target_line

    try:
        scaled, cfg = compare_setup(
            str(params), list(set_ or []), strategy, seed, parallel, pair, part
        )
    except ConfigError as err:
        _fail(err)
    design_seeds = scaled.compare.seeds if part else cfg.seeds
    checks = _preflight(scaled, dry_run, strict, cfg.strategies, design_seeds)
    try:
        report = flow(
            params_file=str(params),
            overrides=list(set_ or []),
            strategies=strategy,
            seeds=seed,
            parallel=parallel,
            strict=strict,
            pairs=pair,
            part=part,
        )
    except USER_ERRORS as err:
        _fail(err)
    _print_after_probe(checks, report)
    rows = report["table"]
    settings = report["settings"]
    table = Table(
        title=f"{settings['model']}: {settings['heldout_questions']} held-out questions, "
        f"{settings['max_steps']} steps, {len(settings['seeds'])} seeds "
        f"({settings['wall_seconds']:.0f} s)"
    )
    columns = (
        "strategy", "accuracy", "interval", "gain", "gain interval", "vs uniform",
        "vs uniform interval", "p", "verdict", "MDE", "steps to uniform", "train s to uniform",
        "rollouts", "train s", "effective prompts",
    )  # fmt: skip
    for name in columns:
        table.add_column(name, justify="left" if name == "strategy" else "right")
    for row in rows:
        table.add_row(
            row["strategy"], f"{row['accuracy']:.3f}", row["ci"] or "",
            f"{row['gain']:+.3f}", row["gain_ci"] or "",
            "" if row["vs_uniform"] is None else f"{row['vs_uniform']:+.3f}",
            row["vs_uniform_ci"] or "", _cell(row["p_value"], ".3f"), row["verdict"] or "",
            _cell(row["mde"], ".3f"), _or_never(row["steps_to_uniform_final"]),
            _cell(row.get("train_s_to_uniform_final"), ".0f") or "never",
            str(row["rollouts"]), f"{row['train_s']:.0f}", f"{row['effective_prompt_ratio']:.2f}",
        )  # fmt: skip
    console.print(table)
    for name, test in report["pairs"].items():
        if test is not None:
            console.print(
                f"{name}: {test['difference']:+.3f} {format_interval(test['ci']) or ''}, "
                f"p={test['p_value']:.3f}, {test['verdict']}",
                highlight=False,
            )
    console.print(STATISTICS_NOTE, highlight=False)
    if report.get("power"):
        console.print(target_line(report["strategies"], report["power"]["target_mde"]))
    console.print(f"wrote {OUT} and {PLOT}")


if __name__ == "__main__":  # `python -m sparft.cli`, e.g. under `accelerate launch`
    app()
