"""Strategy presets: ``strategies/<name>.yaml`` names an Avalanche template and plugins.

A preset is data, not code: ``template`` is a class in ``avalanche.training`` and every plugin a
class in ``clsim.strategies.plugins`` or ``avalanche.training.plugins``. A scenario may override
any hyper-parameter by name; the override goes to the one component whose constructor takes it.
Names, parameters and the type of every value are checked here, against the constructors' source
(``clsim.config.signatures``), so nothing is imported and a bad value fails before any work.

The result is a ``StrategyPlan``: class names and checked keyword arguments, built into an
Avalanche strategy by ``clsim.strategies.build_strategy``. Preset blocks this module does not
know (``federated:``) belong to an ``Extension`` the caller passes in; the extension validates
its block and may name the core preset that runs underneath it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clsim.config import signatures
from clsim.config.errors import ConfigError, Strict, read_yaml_mapping, validation_to_error
from clsim.config.scenario import StrategyRef, TrainConfig

PRESET_DIR = Path(__file__).resolve().parents[2] / "strategies"
TEMPLATES = "avalanche.training"
PLUGIN_MODULES = ("clsim.strategies.plugins", "avalanche.training.plugins")

# Constructor arguments clsim itself supplies from the scenario; presets may not set them.
RESERVED = {"model", "optimizer", "criterion", "train_mb_size", "train_epochs", "eval_mb_size", "device",
            "plugins", "evaluator", "eval_every", "peval_mode", "storage_policy"}
# parameters counted in experiences: at most the stream's length
STREAM_LENGTH_PARAMS = ("period", "window")


class PluginEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    class_: str = Field(alias="class")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PresetFile(BaseModel):
    """A preset file; top-level keys beyond these are blocks of an ``Extension`` (or errors)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    template: str = "Naive"
    params: dict[str, Any] = Field(default_factory=dict)
    plugins: list[PluginEntry] = Field(default_factory=list)

    @property
    def blocks(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Component(Strict):
    """A class (by module and name) and the keyword arguments to build it with."""

    module: str
    cls: str
    params: dict[str, Any] = Field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.cls}({', '.join(f'{k}={v}' for k, v in self.params.items())})"


class StrategyPlan(Strict):
    """A preset with the scenario's overrides applied and checked, ready to build."""

    name: str  # the run name (unique in a scenario)
    preset: str
    template: Component
    plugins: tuple[Component, ...] = ()
    train: TrainConfig  # the scenario's training options with this strategy's ``train:`` overrides applied
    extensions: dict[str, Any] = Field(default_factory=dict)  # key -> an Extension's validated block

    def hparams(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset, "template": self.template.cls}
        for comp in [self.template, *self.plugins]:
            for k, v in comp.params.items():
                out[f"{comp.cls}.{k}"] = v
        for value in self.extensions.values():
            out.update(value.hparams())
        return out

    def plugin(self, cls: str) -> Component | None:
        return next((p for p in self.plugins if p.cls == cls), None)


class Extension(Protocol):
    """A preset block beyond template and plugins (e.g. ``federated:``), validated by its owner."""

    key: str  # the block's name in a preset file
    fields: frozenset[str]  # scenario override keys that go to the block, not to the core preset

    def resolve(self, block: dict, overrides: dict, *, preset_file: Path, file: Path | None, where: str,
                experiences: int) -> tuple[Any, str | None]:
        """The validated block and the core preset that runs under it (None: this preset's own
        template and plugins). Raises ConfigError. The block object has ``hparams() -> dict``,
        ``describe(core: str) -> str`` and ``model_dump(mode="json")``."""

    def load(self, data: dict) -> Any:
        """The block object back from its ``model_dump(mode="json")`` (a saved plan)."""

    def check(self, block: Any, plugins: tuple["Component", ...], file: Path | None, where: str) -> None:
        """The block against the strategy every client runs (its resolved plugins). Raises ConfigError."""


# --------------------------------------------------------------------------- finding presets
def available_presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def load_preset_file(path: Path, extensions: tuple[Extension, ...] = ()) -> PresetFile:
    try:
        preset = PresetFile.model_validate(read_yaml_mapping(path))
    except ValidationError as exc:
        raise validation_to_error(path, exc) from None
    known = {e.key for e in extensions}
    for key in preset.blocks:
        if key not in known:
            raise ConfigError(path, key, "unknown key" + (f"; this command knows the blocks {sorted(known)}"
                                                          if known else ""))
    return preset


def preset_path(name: str, file: Path | None, where: str) -> Path:
    """A shipped preset by name, or a preset file (relative to the scenario file)."""
    presets = available_presets()
    if name in presets:
        return presets[name]
    if name.endswith((".yaml", ".yml")):
        path = Path(name) if Path(name).is_absolute() or file is None else Path(file).parent / name
        if not path.is_file():
            raise ConfigError(file, f"{where}.preset", f"preset file {name!r} not found")
        return path
    raise ConfigError(file, f"{where}.preset",
                      f"unknown strategy {name!r}; expected one of {sorted(presets)} or a preset .yaml path")


# --------------------------------------------------------------------------- components
def _template(preset: PresetFile, path: Path) -> signatures.ClassInfo:
    info = signatures.class_info(TEMPLATES, preset.template)
    if info is None or "SupervisedTemplate" not in info.ancestors:
        raise ConfigError(path, "template", f"{preset.template!r} is not a template in {TEMPLATES}")
    return info


def _plugin(entry: PluginEntry, path: Path, k: int) -> signatures.ClassInfo:
    for module in PLUGIN_MODULES:
        info = signatures.class_info(module, entry.class_)
        if info is not None and "BasePlugin" in info.ancestors:
            return info
    raise ConfigError(path, f"plugins[{k}].class",
                      f"{entry.class_!r} is not a plugin in {' or '.join(PLUGIN_MODULES)}")


def _accepts(info: signatures.ClassInfo) -> dict[str, signatures.Param]:
    return {p.name: p for p in info.params if p.name not in RESERVED}


def _check_value(info: signatures.ClassInfo, key: str, value: Any, shipped: Any, experiences: int) -> str | None:
    if (why := signatures.check(_accepts(info)[key], value, shipped)) is not None:
        return why
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            return f"expected a non-negative number, got {value!r}"
        if key in STREAM_LENGTH_PARAMS and value > experiences:
            return f"{value} is longer than the stream of {experiences} experiences; expected at most {experiences}"
    return None


def _core(ref: StrategyRef, overrides: dict, preset: PresetFile, path: Path, file: Path | None, where: str,
          experiences: int, also_allowed: frozenset[str] = frozenset()) -> tuple[Component, tuple[Component, ...]]:
    """Template + plugins of ``preset`` with ``overrides`` applied, every name and value checked."""
    infos = [_template(preset, path)] + [_plugin(e, path, k) for k, e in enumerate(preset.plugins)]
    params = [dict(preset.params)] + [e.params for e in preset.plugins]
    locs = ["params"] + [f"plugins[{k}]" for k in range(len(preset.plugins))]
    for info, ps, loc in zip(infos, params, locs):
        unknown = sorted(set(ps) - set(_accepts(info)))
        if unknown:
            raise ConfigError(path, f"{loc}.{unknown[0]}",
                              f"unknown parameter for {info.name}; expected one of {sorted(_accepts(info))}")
        for key, value in ps.items():
            if (why := _check_value(info, key, value, signatures.NO_DEFAULT, experiences)) is not None:
                raise ConfigError(path, f"{loc}.{key}", f"{info.name}: {why}")
    for key, value in overrides.items():
        owners = [k for k, info in enumerate(infos) if key in _accepts(info)]
        if not owners:
            allowed = sorted(set(also_allowed).union(*(_accepts(i) for i in infos)))
            raise ConfigError(file, f"{where}.{key}",
                              f"unknown parameter for preset {ref.preset!r}; expected one of {allowed}")
        k = owners[-1]
        if (why := _check_value(infos[k], key, value, params[k].get(key, signatures.NO_DEFAULT), experiences)):
            raise ConfigError(file, f"{where}.{key}", f"{infos[k].name}: {why}")
        params[k] = {**params[k], key: value}
    comps = [Component(module=module, cls=info.name, params=ps)
             for info, ps, module in zip(infos, params, [TEMPLATES] + [_home(i) for i in infos[1:]])]
    return comps[0], tuple(comps[1:])


def _home(info: signatures.ClassInfo) -> str:
    """The public module a plugin is imported from (clsim's own, else Avalanche's)."""
    return next(m for m in PLUGIN_MODULES if info.module.startswith(m))


# --------------------------------------------------------------------------- resolving
def strategy_train(ref: StrategyRef, train: TrainConfig, file: Path | None, where: str) -> TrainConfig:
    """The scenario's training options updated with the entry's ``train:`` block, checked whole
    (an unknown key or a bad value names ``strategies[i].train.<key>``)."""
    if not ref.train:
        return train
    try:
        return TrainConfig.model_validate({**train.model_dump(), **ref.train})
    except ValidationError as exc:
        raise validation_to_error(file, exc, prefix=f"{where}.train") from None


def resolve_strategy(ref: StrategyRef, *, file: Path | None = None, index: int = 0, experiences: int,
                     extensions: tuple[Extension, ...] = (), train: TrainConfig | None = None) -> StrategyPlan:
    """Load ``ref.preset``, apply the overrides, and check every name and value. ``train`` is the
    scenario's training options (default: ``TrainConfig()``); the plan carries them with the
    entry's own ``train:`` overrides applied."""
    where = f"strategies[{index}]"
    train = strategy_train(ref, train or TrainConfig(), file, where)
    path = preset_path(ref.preset, file, where)
    preset = load_preset_file(path, extensions)
    overrides, extras, local = dict(ref.overrides), {}, None
    owned: frozenset[str] = frozenset()
    for ext in extensions:
        if ext.key not in preset.blocks:
            continue
        mine = {k: overrides.pop(k) for k in list(overrides) if k in ext.fields}
        extras[ext.key], local = ext.resolve(preset.blocks[ext.key], mine, preset_file=path, file=file, where=where,
                                             experiences=experiences)
        owned |= ext.fields
    if local is None:
        template, plugins = _core(ref, overrides, preset, path, file, where, experiences, owned)
    else:
        own = {"template", "params", "plugins"} & preset.model_fields_set
        if own:
            raise ConfigError(path, sorted(own)[0], "a preset that names a local preset takes its strategy from "
                                                    "that preset; remove template/params/plugins here")
        core = available_presets()
        local_path = core.get(local)
        local_preset = load_preset_file(local_path, extensions) if local_path else None
        if local_preset is None or local_preset.blocks:
            plain = sorted(n for n, p in core.items() if not load_preset_file(p, extensions).blocks)
            raise ConfigError(path, f"{next(e.key for e in extensions if e.key in preset.blocks)}.local",
                              f"{local!r} is not a core preset; expected one of {plain}")
        try:
            template, plugins = _core(StrategyRef(preset=local), overrides, local_preset, local_path, file, where,
                                      experiences, owned)
        except ConfigError as exc:
            raise ConfigError(exc.file, exc.field, f"{exc.message} (local preset of {ref.preset!r})") from None
    for ext in extensions:
        if ext.key in extras:
            ext.check(extras[ext.key], plugins, file, where)
    return StrategyPlan(name=ref.run_name, preset=ref.preset, template=template, plugins=plugins, train=train,
                        extensions=extras)
