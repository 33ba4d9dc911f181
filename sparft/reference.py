"""``docs/reference``: the command line and the ``params.yaml`` keys as Markdown, generated from
the typer app and the config classes so the reference cannot drift from the code.

``sparft docs-reference`` writes both files; ``sparft docs-reference --check`` (and
``tests/test_reference.py``) fails when a committed copy differs from what the code generates.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

REFERENCE_DIR = Path("docs/reference")
CLI_FILE = REFERENCE_DIR / "cli.md"
PARAMS_FILE = REFERENCE_DIR / "params.md"
FILES = (CLI_FILE, PARAMS_FILE)
REGENERATE = "sparft docs-reference"
NONE = "—"  # an empty cell: no description, no default, no constraint
# typer adds these to the root command, in a form that depends on its shell detection (env)
SKIPPED_OPTIONS = ("install_completion", "show_completion")


def _paragraphs(doc: str | None) -> list[str]:
    """A docstring as paragraphs, each on one line (a Markdown table cell cannot break)."""
    text = inspect.cleandoc(doc or "")
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def _first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (one followed by a capital)."""
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]


def _cell(text: str) -> str:
    """Text for a table cell: one line, ``|`` escaped outside code spans."""
    parts = re.split(r"(`+[^`]*?`+)", " ".join(text.split()))
    return "".join(p if p.startswith("`") else p.replace("|", r"\|") for p in parts)


def _code(text: str) -> str:
    """``text`` as an inline code span, fenced with more backticks than it holds."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    if not longest:
        return f"`{text}`"
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# ---------------------------------------------------------------------------- params.yaml keys


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config class a field holds (``ServerConfig``, or ``FieldMap`` of ``FieldMap | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        model = _model_in(arg)
        if model is not None:
            return model
    return None


def type_name(annotation: Any) -> str:
    """A readable type: ``int``, ``str | None``, a literal as its values, ``list[int]``; a config
    class is a ``mapping``. Markdown: literal values as code, ``|`` escaped for a table cell."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "Any"
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return r" \| ".join(_code(yaml_value(a)) for a in args)
    if origin in (typing.Union, types.UnionType):
        return r" \| ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def yaml_value(value: Any) -> str:
    """A value as it is written in ``params.yaml``: YAML flow style, or a JSON string (which
    YAML reads too) where plain YAML would need several lines or would not read back."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    text = yaml.safe_dump(
        value, default_flow_style=True, width=1_000_000, allow_unicode=True, sort_keys=False
    ).strip()
    text = text.removesuffix("...").strip()
    if "\n" in text or yaml.safe_load(text) != value:
        return json.dumps(value, ensure_ascii=False)
    return text


CONSTRAINTS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "≤"),
    (annotated_types.MultipleOf, "multiple_of", "multiple of"),
    (annotated_types.MinLen, "min_length", "length ≥"),
    (annotated_types.MaxLen, "max_length", "length ≤"),
)


def constraints(field: FieldInfo) -> str:
    """The bounds a field declares (``ge``, ``gt``, ``le``, ``lt``, lengths), e.g. ``≥ 0, ≤ 1``."""
    return ", ".join(
        f"{sign} {yaml_value(getattr(item, attr))}"
        for item in field.metadata
        for kind, attr, sign in CONSTRAINTS
        if isinstance(item, kind)
    )


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, ...]]:
    """One row per key of ``model`` under ``prefix``; a nested config class's keys follow its own
    row (``generation.server``, then ``generation.server.host``, ...)."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        nested = _model_in(field.annotation)
        if field.is_required():
            default = "required"
        elif nested is not None and field.default_factory is not None:
            default = f"the {_code(key + '.*')} rows"
        else:
            default = _code(yaml_value(field.get_default(call_default_factory=True)))
        yield (
            _code(key),
            type_name(field.annotation),
            default,
            constraints(field) or NONE,
            _cell(field.description) if field.description else NONE,
        )
        if nested is not None:
            yield from _rows(nested, f"{key}.")


def render_sections(model: type[BaseModel]) -> list[str]:
    """One ``## section`` per field of ``model`` (``Params``): what its config class is for,
    then a table of its keys. Pure: the same classes give the same text."""
    lines: list[str] = []
    for section, field in model.model_fields.items():
        config = _model_in(field.annotation)
        if config is None:
            raise TypeError(f"{model.__name__}.{section}: not a config class")
        lines += ["", f"## {section}", ""]
        about = _paragraphs(config.__doc__)
        if about:
            lines += [about[0], ""]
        lines += [f"Class: {_code(f'{config.__module__}.{config.__qualname__}')}", ""]
        header = ("Key", "Type", "Default", "Constraints", "Description")
        lines += _table(header, list(_rows(config, f"{section}.")))
    return lines


def params_reference() -> str:
    """``docs/reference/params.md``: every key of ``params.yaml`` with its type, default,
    constraints and description, from ``sparft.config.Params``."""
    from sparft.config import Params

    sections = " · ".join(f"[{name}](#{name})" for name in Params.model_fields)
    lines = [
        "# params.yaml",
        "",
        f"<!-- Generated by `{REGENERATE}` from the config classes (`sparft.config.Params`):"
        " do not edit by hand. -->",
        "",
        "Every key of `params.yaml`, section by section, as the config classes declare it. A key"
        " left out of `params.yaml` takes the default shown here; `sparft config show` prints the"
        " resolved values, and `--set section.key=value` overrides one for a single command (the"
        " value read as YAML).",
        "",
        f"Sections: {sections}",
        *render_sections(Params),
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- command line


def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group under ``command``, depth first, by name."""
    for name in sorted(getattr(command, "commands", None) or {}):
        sub = command.commands[name]
        if getattr(sub, "hidden", False):
            continue
        yield (*path, name), sub
        yield from _commands(sub, (*path, name))


def _params(command: Any) -> list[Any]:
    return [
        p
        for p in command.params
        if not getattr(p, "hidden", False) and p.name not in SKIPPED_OPTIONS
    ]


def _option_type(param: Any) -> str:
    """``flag`` for a boolean flag, else the annotation (``path``, ``int``, ``str``); a repeatable
    option says so."""
    if getattr(param, "is_flag", False):
        return "flag"
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if annotation is None:  # plain click
        text = str(getattr(getattr(param, "type", None), "name", "text"))
    else:
        if typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        text = "path" if annotation is Path else type_name(annotation)
    return f"{text}, repeatable" if param.multiple else text


def _option_default(param: Any) -> str:
    if param.required:
        return "required"
    default = param.default
    if default is None or callable(default) or default in ((), []):
        return NONE
    if isinstance(default, bool):
        return "on" if default else "off"
    return _code(str(default) or '""')


def _param_name(param: Any) -> str:
    if param.param_type_name == "argument":
        return _code((param.metavar or param.name).upper())
    return " / ".join(_code(opt) for opt in [*param.opts, *param.secondary_opts])


def _usage(path: tuple[str, ...], command: Any) -> str:
    pieces = list(path)
    params = _params(command)
    if any(p.param_type_name == "option" for p in params):
        pieces.append("[OPTIONS]")
    for p in params:
        if p.param_type_name == "argument":
            name = (p.metavar or p.name).upper() + ("..." if p.nargs != 1 else "")
            pieces.append(name if p.required else f"[{name}]")
    return " ".join(pieces)


def _is_group(command: Any) -> bool:
    return bool(getattr(command, "commands", None))


def render_commands(root: Any, prog: str = "sparft") -> list[str]:
    """Markdown for a click/typer command tree (``typer.main.get_command(app)``): an index, then
    per command its help, usage and a table of its arguments and options. Commands by name, a
    group's after it; a group itself is a line of the index."""
    commands = list(_commands(root, (prog,)))
    index = [
        (
            " ".join(path) if _is_group(cmd) else f"[{' '.join(path)}](#{'-'.join(path)})",
            _cell(_first_sentence((_paragraphs(cmd.help) or [NONE])[0])),
        )
        for path, cmd in commands
    ]
    lines = _table(("Command", "What it does"), index)
    if _params(root):
        lines += ["", f"## {prog}", "", *_param_table(root)]
    for path, cmd in commands:
        if _is_group(cmd):
            continue
        lines += ["", f"## {' '.join(path)}", ""]
        for paragraph in _paragraphs(cmd.help):
            lines += [paragraph, ""]
        lines += ["```", _usage(path, cmd), "```"]
        if _params(cmd):
            lines += ["", *_param_table(cmd)]
    return lines


def _param_table(command: Any) -> list[str]:
    rows = [
        (
            _param_name(p),
            _option_type(p),
            _option_default(p),
            _cell(p.help) if getattr(p, "help", None) else NONE,
        )
        for p in _params(command)
    ]
    return _table(("Argument or option", "Type", "Default", "Help"), rows)


def cli_reference(app: Any) -> str:
    """``docs/reference/cli.md``: every command of the typer ``app`` (``sparft.cli.app``, handed
    in: the library does not import the CLI) with its help and its arguments and options, read
    from the command objects typer builds (not ``--help`` text)."""
    import typer

    root = typer.main.get_command(app)
    lines = [
        "# Command line",
        "",
        f"<!-- Generated by `{REGENERATE}` from the typer app (`sparft.cli.app`):"
        " do not edit by hand. -->",
        "",
        *_paragraphs(root.help)[:1],
        "",
        "Every command also takes `--help`, which prints the same help in the terminal;"
        " `sparft --install-completion` installs shell completion.",
        "",
        *render_commands(root),
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- files


def generated(app: Any) -> dict[Path, str]:
    """The reference files (relative to the project root) and the text each should hold."""
    return {CLI_FILE: cli_reference(app), PARAMS_FILE: params_reference()}


def _differs(path: Path, text: str) -> bool:
    return not path.is_file() or path.read_text(encoding="utf-8") != text


def stale(root: str | Path, app: Any) -> list[Path]:
    """The reference files under ``root`` that are missing or differ from what the code
    generates now (paths relative to ``root``)."""
    return [rel for rel, text in generated(app).items() if _differs(Path(root) / rel, text)]


def write_reference(root: str | Path, app: Any) -> list[Path]:
    """Write the reference files under ``root``, each atomically (``sparft.io.atomic_path``);
    one that is already current is left alone. Returns those written, relative to ``root``."""
    from sparft.io import atomic_path

    written = []
    for rel, text in generated(app).items():
        target = Path(root) / rel
        if _differs(target, text):
            with atomic_path(target) as tmp:
                tmp.write_text(text, encoding="utf-8")
            written.append(rel)
    return written
