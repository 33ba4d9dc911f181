"""``params.yaml``: one section per stage, each validated by the config class beside its code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparft.arithmetic import ArithmeticConfig
from sparft.bandit import BanditConfig
from sparft.cluster import ClusterConfig
from sparft.comparison import CompareConfig
from sparft.curricula.allocation import AllocationConfig
from sparft.curricula.cures import CuresConfig
from sparft.curricula.dots import DotsConfig
from sparft.curricula.dump import DumpConfig
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
    bandit: BanditConfig = Field(default_factory=BanditConfig)
    cures: CuresConfig = Field(default_factory=CuresConfig)
    dump: DumpConfig = Field(default_factory=DumpConfig)
    dots: DotsConfig = Field(default_factory=DotsConfig)
    allocation: AllocationConfig = Field(default_factory=AllocationConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)


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
    raw = apply_overrides(raw, overrides or [])
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, str(path))) from err


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
