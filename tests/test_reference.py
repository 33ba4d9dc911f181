"""docs/reference: the generated CLI and params pages are current, complete, and follow the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model
from typer.testing import CliRunner

from sparft.cli import app
from sparft.config import Params
from sparft.reference import (
    CLI_FILE,
    FILES,
    PARAMS_FILE,
    REGENERATE,
    cli_reference,
    constraints,
    params_reference,
    render_commands,
    render_sections,
    stale,
    type_name,
    write_reference,
    yaml_value,
)

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_committed_reference_is_current() -> None:
    outdated = stale(ROOT, app)
    assert outdated == [], (
        f"{', '.join(map(str, outdated))} differ from what the code generates: run "
        f"`{REGENERATE}` and commit the result"
    )


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"section.key": value}`` of a ``model_dump``; an empty mapping is a value."""
    if isinstance(node, dict) and node:
        return {
            k: v for key, value in node.items() for k, v in leaves(value, f"{prefix}{key}.").items()
        }
    return {prefix[:-1]: node}


def test_every_params_key_is_documented() -> None:
    text = params_reference()
    keys = leaves(Params().model_dump(mode="json"))
    assert len(keys) > 100
    missing = [key for key in keys if f"| `{key}` |" not in text]
    assert missing == []
    # every section has its own heading, so params.md#bandit lands on it
    for section in Params.model_fields:
        assert f"\n## {section}\n" in text
    # a nested model's keys are expanded, a model inside an Optional too
    for key in ("train.heldout.every", "generation.server.port", "data.fields.question"):
        assert f"| `{key}` |" in text


def test_params_rows_say_type_default_constraints_description() -> None:
    from sparft.generation import GenerationConfig

    rows = {line.split(" | ")[0]: line for line in params_reference().splitlines()}
    description = GenerationConfig.model_fields["top_p"].description
    assert rows["| `generation.top_p`"] == (
        f"| `generation.top_p` | float | `1.0` | > 0.0, ≤ 1.0 | {description} |"
    )
    assert r"| `thompson` \| `exp3` \| `ucb1` |" in rows["| `bandit.algorithm`"]
    # a default_factory is evaluated; a nested model points at its rows
    assert "| `[1, 2, 3, 4, 5, 6, 7, 8]` |" in rows["| `arithmetic.grades`"]
    assert "| the `train.heldout.*` rows |" in rows["| `train.heldout`"]


def test_every_default_reads_back_as_yaml() -> None:
    """The default column can be pasted into params.yaml: it reads back as the default."""
    defaults = leaves(Params().model_dump(mode="json"))
    checked = 0
    for line in params_reference().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        key = cells[0].strip("`") if len(cells) == 5 else None
        if key in defaults:
            assert cells[2].startswith("`") and cells[2].endswith("`"), line
            assert yaml.safe_load(cells[2][1:-1]) == defaults[key], line
            checked += 1
    assert checked == len(defaults)


def test_every_command_is_documented() -> None:
    text = cli_reference(app)
    root = typer.main.get_command(app)

    def names(command: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        subs = getattr(command, "commands", None) or {}
        return [
            p for name, sub in subs.items() for p in [(*path, name), *names(sub, (*path, name))]
        ]

    paths = names(root, ("sparft",))
    assert ("sparft", "config", "show") in paths and ("sparft", "docs-reference") in paths
    for path in paths:
        assert " ".join(path) in text
        command = root
        for name in path[1:]:
            command = command.commands[name]
        if not getattr(command, "commands", None):
            heading = f"\n## {' '.join(path)}\n"
            assert heading in text
            section = text.split(heading)[1].split("\n## ")[0]
            for param in command.params:
                name = param.name.upper() if param.param_type_name == "argument" else param.opts[0]
                assert f"| `{name}` " in section, (path, name)
    assert "\x1b[" not in text  # no terminal styling


def test_a_new_config_field_changes_the_page() -> None:
    class Section(BaseModel):
        """The ``toy`` section."""

        model_config = ConfigDict(extra="forbid")

        rate: float = Field(0.5, gt=0, le=1, description="A share.")
        name: str = "x"

    class Toy(BaseModel):
        toy: Section = Field(default_factory=Section)

    before = "\n".join(render_sections(Toy))
    wider = create_model(
        "Section",
        __base__=Section,
        steps=(int, Field(3, ge=1, description="How many.")),
    )
    after = "\n".join(
        render_sections(create_model("Toy", toy=(wider, Field(default_factory=wider))))
    )
    assert before != after
    assert "| `toy.steps` | int | `3` | ≥ 1 | How many. |" in after
    assert "| `toy.rate` | float | `0.5` | > 0, ≤ 1 | A share. |" in before
    assert "| `toy.name` | str | `x` | — | — |" in before  # no bounds, no description
    assert "## toy\n\nThe ``toy`` section." in before


def test_the_page_follows_a_real_config_class(monkeypatch: pytest.MonkeyPatch) -> None:
    from sparft.bandit import BanditConfig

    before = params_reference()
    extended = create_model(
        "BanditConfig", __base__=BanditConfig, arms_cap=(int | None, Field(None, ge=2))
    )
    fields = dict(Params.model_fields)
    fields["bandit"] = Params.model_fields["bandit"].__class__.from_annotated_attribute(
        extended, Field(default_factory=extended)
    )
    monkeypatch.setattr(Params, "__pydantic_fields__", fields)
    after = params_reference()
    assert "| `bandit.arms_cap` | int \\| None | `null` | ≥ 2 | — |" in after
    assert "bandit.arms_cap" not in before


def test_type_names_and_values() -> None:
    assert type_name(int) == "int"
    assert type_name(str | None) == r"str \| None"
    assert type_name(Literal["a", "b"]) == r"`a` \| `b`"
    assert type_name(list[int]) == "list[int]"
    assert type_name(dict[str, Any]) == "dict[str, Any]"
    assert type_name(Annotated[int, "meta"]) == "int"
    assert yaml_value("a\nb") == '"a\\nb"'
    assert yaml_value("yes") == "'yes'"  # a YAML boolean word stays a string
    assert yaml_value(1e-5) == "1.0e-05"
    assert yaml_value({"k": [1]}) == "{k: [1]}"
    for value in ("null", "", "3", "a: b", "#x", 0.1, None, True, [], {"a": None}):
        assert yaml.safe_load(yaml_value(value)) == value
    field = Params.model_fields["compare"].annotation.model_fields["seeds"]  # type: ignore[union-attr]
    assert constraints(field) == "length ≥ 1"


def test_commands_render_from_the_command_objects() -> None:
    toy = typer.Typer()
    sub = typer.Typer(help="Things.")
    toy.add_typer(sub, name="things")

    @toy.command()
    def go(
        target: Annotated[str, typer.Argument(help="Where | to.")],
        fast: Annotated[bool, typer.Option("--fast/--slow", help="Speed.")] = True,
        tag: Annotated[list[str] | None, typer.Option(help="A tag.")] = None,
        count: int = 2,
    ) -> None:
        """Go somewhere.

        Second paragraph,
        wrapped."""

    @sub.command("list")
    def things_list() -> None:
        """List the things."""

    @toy.command(hidden=True)
    def secret() -> None:
        """Not shown."""

    lines = render_commands(typer.main.get_command(toy), prog="toy")
    text = "\n".join(lines)
    assert "secret" not in text
    assert "| [toy go](#toy-go) | Go somewhere. |" in text
    assert "| toy things | Things. |" in text
    assert "## toy things list" in text
    assert "Second paragraph, wrapped." in text
    assert "```\ntoy go [OPTIONS] TARGET\n```" in text
    assert r"| `TARGET` | str | required | Where \| to. |" in text
    assert "| `--fast` / `--slow` | flag | on | Speed. |" in text
    assert "| `--tag` | str, repeatable | — | A tag. |" in text
    assert "| `--count` | int | `2` | — |" in text


def test_check_fails_on_a_stale_copy_and_passes_once_regenerated(tmp_path: Path) -> None:
    assert stale(tmp_path, app) == list(FILES)
    done = runner.invoke(app, ["docs-reference", "--check", "--root", str(tmp_path)])
    assert done.exit_code == 1
    assert "cli.md is not current" in done.output and REGENERATE in done.output

    done = runner.invoke(app, ["docs-reference", "--root", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert (tmp_path / CLI_FILE).read_text(encoding="utf-8") == cli_reference(app)
    assert runner.invoke(app, ["docs-reference", "--check", "--root", str(tmp_path)]).exit_code == 0

    params = tmp_path / PARAMS_FILE
    text = params.read_text(encoding="utf-8")
    params.write_text(text.replace("## bandit", "## bandits"), encoding="utf-8")
    done = runner.invoke(app, ["docs-reference", "--check", "--root", str(tmp_path)])
    assert done.exit_code == 1
    assert "params.md is not current" in done.output and "cli.md" not in done.output
    assert write_reference(tmp_path, app) == [PARAMS_FILE]
    assert write_reference(tmp_path, app) == []
    assert stale(tmp_path, app) == []
