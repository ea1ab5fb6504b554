"""Strategy presets: ``strategies/<name>.yaml`` names an Avalanche template and plugins.

A preset is data, not code: ``template`` is a class in ``avalanche.training`` and every
plugin a class in ``clsim.strategies.plugins`` or ``avalanche.training.plugins``. A scenario
may override any hyper-parameter by name; the override goes to the one component whose
constructor takes it. Everything is checked (names, parameters, values) before any work.
A preset with a ``federated:`` block runs through Flower (clsim.federated.spec): its clients
run the core preset named by ``local:`` (or this preset's own template and plugins).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clsim.config import ConfigError, StrategyRef, read_yaml_mapping, validation_to_error

PRESET_DIR = Path(__file__).resolve().parents[2] / "strategies"

# Constructor arguments clsim itself supplies from the scenario; presets may not set them.
RESERVED = {"model", "optimizer", "criterion", "train_mb_size", "train_epochs", "eval_mb_size", "device",
            "plugins", "evaluator", "eval_every", "peval_mode", "kwargs", "self", "storage_policy"}


class PluginSpec(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    class_: str = Field(alias="class")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PresetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    template: str = "Naive"
    params: dict[str, Any] = Field(default_factory=dict)
    plugins: list[PluginSpec] = Field(default_factory=list)
    federated: dict[str, Any] | None = None  # validated by clsim.federated.spec.FederatedConfig


@dataclass
class Component:
    """A class and the keyword arguments to build it with."""

    cls: type
    params: dict[str, Any] = field(default_factory=dict)

    def accepts(self) -> set[str]:
        sig = inspect.signature(self.cls.__init__)
        return {n for n, p in sig.parameters.items()
                if n not in RESERVED and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}

    def build(self):
        return self.cls(**self.params)


@dataclass
class ResolvedStrategy:
    """A preset with the scenario's overrides applied, ready to build."""

    name: str  # the run name (unique in a scenario)
    preset: str
    template: Component
    plugins: list[Component]
    federated: Any = None  # a FederatedConfig: run through Flower; template + plugins are each client's

    def hparams(self) -> dict[str, Any]:
        out: dict[str, Any] = {"preset": self.preset, "template": self.template.cls.__name__}
        for comp in [self.template, *self.plugins]:
            for k, v in comp.params.items():
                out[f"{comp.cls.__name__}.{k}"] = v
        if self.federated is not None:
            out.update(self.federated.hparams())
        return out


def available_presets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRESET_DIR.glob("*.yaml"))}


def _lookup_template(name: str):
    import avalanche.training as at
    from avalanche.training.templates import SupervisedTemplate

    cls = getattr(at, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, SupervisedTemplate)):
        return None
    return cls


def _lookup_plugin(name: str):
    import avalanche.training.plugins as ap
    from avalanche.core import BasePlugin

    import clsim.strategies.plugins as cp

    for mod in (cp, ap):
        cls = getattr(mod, name, None)
        if inspect.isclass(cls) and issubclass(cls, BasePlugin):
            return cls
    return None


def _check_values(comp: Component, loc: str, path: Path, ref: StrategyRef, file, where: str) -> None:
    """Numbers must be non-negative; the error names the scenario (for an override) or the preset."""
    for k, v in comp.params.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)) and v < 0:
            src, field = (file, f"{where}.{k}") if k in ref.overrides else (path, f"{loc}.{k}")
            raise ConfigError(src, field, f"expected a non-negative number, got {v!r}")


def load_preset_file(path: Path) -> PresetFile:
    data = read_yaml_mapping(path)
    try:
        return PresetFile.model_validate(data)
    except ValidationError as exc:
        raise validation_to_error(path, exc) from None


def resolve(ref: StrategyRef, file: str | Path | None = None, index: int = 0) -> ResolvedStrategy:
    """Load ``ref.preset``, apply the overrides, and check every name and value."""
    where = f"strategies[{index}]"
    presets = available_presets()
    path = presets.get(ref.preset)
    if path is None and ref.preset.endswith((".yaml", ".yml")):
        path = Path(ref.preset) if Path(ref.preset).is_absolute() or file is None else Path(file).parent / ref.preset
        if not path.is_file():
            raise ConfigError(file, f"{where}.preset", f"preset file {ref.preset!r} not found")
    if path is None:
        raise ConfigError(file, f"{where}.preset",
                          f"unknown strategy {ref.preset!r}; expected one of {sorted(presets)} or a preset .yaml path")
    preset = load_preset_file(path)
    if preset.federated is not None:
        return _resolve_federated(ref, preset, path, file, index)
    return _resolve_local(ref, preset, path, file, where)


def _resolve_local(ref: StrategyRef, preset: PresetFile, path: Path, file, where: str,
                   also_allowed: set[str] = frozenset()) -> ResolvedStrategy:
    """Template + plugins of ``preset`` with ``ref``'s overrides applied and checked."""
    template_cls = _lookup_template(preset.template)
    if template_cls is None:
        raise ConfigError(path, "template", f"{preset.template!r} is not a template in avalanche.training")
    template = Component(template_cls, dict(preset.params))
    plugins = []
    for k, spec in enumerate(preset.plugins):
        cls = _lookup_plugin(spec.class_)
        if cls is None:
            raise ConfigError(path, f"plugins[{k}].class",
                              f"{spec.class_!r} is not a plugin in clsim.strategies.plugins or avalanche.training.plugins")
        plugins.append(Component(cls, spec.params))

    for comp, loc in [(template, "params"), *[(p, f"plugins[{k}]") for k, p in enumerate(plugins)]]:
        unknown = set(comp.params) - comp.accepts()
        if unknown:
            raise ConfigError(path, f"{loc}.{sorted(unknown)[0]}",
                              f"unknown parameter for {comp.cls.__name__}; expected one of {sorted(comp.accepts())}")

    for key, value in ref.overrides.items():
        owners = [c for c in (template, *plugins) if key in c.accepts()]
        if not owners:
            allowed = sorted(set().union(also_allowed, *(c.accepts() for c in (template, *plugins))))
            raise ConfigError(file, f"{where}.{key}",
                              f"unknown parameter for preset {ref.preset!r}; expected one of {allowed}")
        owners[-1].params[key] = value

    for comp, loc in [(template, "params"), *[(p, f"plugins[{k}]") for k, p in enumerate(plugins)]]:
        _check_values(comp, loc, path, ref, file, where)
    resolved = ResolvedStrategy(ref.run_name, ref.preset, template, plugins)
    for comp in plugins:  # build once now, so a bad value fails before any work
        try:
            comp.build()
        except (TypeError, ValueError) as exc:
            raise ConfigError(file, where, f"{comp.cls.__name__}: {exc}") from None
    return resolved


def _resolve_federated(ref: StrategyRef, preset: PresetFile, path: Path, file, index: int) -> ResolvedStrategy:
    """A preset with a ``federated:`` block: the block (with the scenario's overrides for its
    keys) is validated; every other override goes to the local strategy each client runs —
    the core preset named by ``local:``, or this preset's own template + plugins."""
    from clsim.federated.spec import FederatedConfig, build_server_strategy

    where = f"strategies[{index}]"
    try:
        FederatedConfig.model_validate(preset.federated)
    except ValidationError as exc:
        raise validation_to_error(path, exc, prefix="federated") from None
    fed_keys = set(FederatedConfig.model_fields)
    fed_over = {k: v for k, v in ref.overrides.items() if k in fed_keys}
    local_over = {k: v for k, v in ref.overrides.items() if k not in fed_keys}
    try:
        fed = FederatedConfig.model_validate({**preset.federated, **fed_over})
    except ValidationError as exc:
        raise validation_to_error(file, exc, prefix=where) from None
    try:
        build_server_strategy(fed)
    except (TypeError, ValueError) as exc:
        ours = "server_params" in fed_over or "server" in fed_over
        raise ConfigError(file if ours else path, f"{where}.server_params" if ours else "federated.server_params",
                          f"{fed.server}: {exc}") from None

    if fed.local is None:
        local_ref = StrategyRef.model_validate({"preset": ref.preset, **local_over})
        local = _resolve_local(local_ref, preset, path, file, where, fed_keys)
    else:
        own = {"template", "params", "plugins"} & preset.model_fields_set
        if own:
            raise ConfigError(path, sorted(own)[0], "a federated preset with `local:` takes the local strategy "
                                                    "from that preset; remove template/params/plugins here")
        core = {n: p for n, p in available_presets().items() if load_preset_file(p).federated is None}
        if fed.local not in core:
            raise ConfigError(path, "federated.local",
                              f"{fed.local!r} is not a core preset; expected one of {sorted(core)}")
        local_ref = StrategyRef.model_validate({"preset": fed.local, **local_over})
        try:
            local = _resolve_local(local_ref, load_preset_file(core[fed.local]), core[fed.local], file, where,
                                   fed_keys)
        except ConfigError as exc:
            raise ConfigError(exc.file, exc.field, f"{exc.message} (local preset of {ref.preset!r})") from None
    return ResolvedStrategy(ref.run_name, ref.preset, local.template, local.plugins, federated=fed)
