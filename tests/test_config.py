"""params.yaml validation: unknown keys, wrong types and ranges are named with what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparft.config import ConfigError, Params, dump_params, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_repository_params_validate() -> None:
    params = load_params(ROOT / "params.yaml")
    assert params.data.spec == "arithmetic"
    assert load_params(ROOT / "params.yaml", []) == Params.model_validate(
        __import__("yaml").safe_load(dump_params(params))
    )


def test_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load_params(tmp_path / "none.yaml") == Params()


def test_overrides_are_typed(tmp_path: Path) -> None:
    params = load_params(
        tmp_path / "none.yaml",
        ["probe.k=8", "generation.temperature=0", "arithmetic.grades=[1, 3]", "probe.model=null"],
    )
    assert params.probe.k == 8 and params.generation.temperature == 0.0
    assert params.arithmetic.grades == [1, 3] and params.probe.model is None


@pytest.mark.parametrize(("written", "meant"), [("off", "off"), ("on", "on"), ("'off'", "off")])
def test_yaml_on_off_is_the_word_not_a_boolean(tmp_path: Path, written: str, meant: str) -> None:
    """YAML 1.1 turns a bare on/off into a boolean; a user writing ``lora: off`` means the word."""
    assert load_params(tmp_path / "none.yaml", [f"train.lora={written}"]).train.lora == meant
    path = tmp_path / "params.yaml"
    path.write_text(f"train:\n  lora: {written}\n")
    assert load_params(path).train.lora == meant


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.nope=1", "data.nope: unknown key (allowed: spec, split"),
        ("nope.key=1", "nope: unknown key (allowed: data, arithmetic, prompt, generation, probe"),
        ("data.on_bad_rows=maybe", "Input should be 'error' or 'skip'"),
        ("probe.k=0", "probe.k: Input should be greater than or equal to 1"),
        ("probe.k=many", "probe.k: Input should be a valid integer"),
        ("arithmetic.grades=[9]", "grades must be a non-empty subset of [1, 2, 3, 4, 5, 6, 7, 8]"),
        ("prompt.template=hello", "template must contain the placeholder {question}"),
        ("noequals", "expected section.key=value"),
        ("probe=3", "name a section and a key"),
    ],
)
def test_bad_values_name_key_and_allowed(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_params(tmp_path / "none.yaml", [override])
    assert message in str(err.value)


def test_bad_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_params(path)
