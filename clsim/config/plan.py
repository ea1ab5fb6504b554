"""The one resolver: a scenario file in, the complete and checked plan of a run out.

``resolve`` reads the scenario, resolves every strategy's preset with its overrides, checks the
values against the constructors they go to, the stream-length limits and the model's files.
Every later stage — the Ray actors, the Flower server and its clients, a resumed run — receives
this ``Plan`` (in memory, or as the ``plan.json`` a run folder keeps); nothing downstream parses
or validates the scenario again. Building the stream itself (reading data files, drawing
splits) is the data layer's work and reports its own errors the same way.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from clsim.config.errors import ConfigError, Strict, validation_to_error
from clsim.config.online import check as check_protocol
from clsim.config.presets import Extension, StrategyPlan, resolve_strategy
from clsim.config.pretrained import check_model
from clsim.config.scenario import Scenario, load_scenario, scenario_to_dict


class Plan(Strict):
    """Everything a run needs, checked before any work starts."""

    file: Path  # the scenario file: errors name it; relative paths were resolved against it
    scenario: Scenario
    strategies: tuple[StrategyPlan, ...]

    @property
    def experiences(self) -> int:
        return self.scenario.stream_length

    @property
    def seeds(self) -> list[int]:
        return self.scenario.run_seeds

    def for_seed(self, seed: int) -> "Plan":
        """This plan run with one seed (what one Ray actor, one federation, one lifecycle gets)."""
        return self.model_copy(update={"scenario": self.scenario.model_copy(update={"seed": seed, "seeds": None})})

    def strategy(self, name: str) -> StrategyPlan:
        return next(s for s in self.strategies if s.name == name)

    def only(self, names: list[str], field: str = "--strategies") -> "Plan":
        """The plan restricted to ``names`` (in plan order); an unknown name is a ConfigError."""
        known = [s.name for s in self.strategies]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(None, field, f"{unknown[0]!r} is not in the scenario; expected some of {known}")
        return self.model_copy(update={"strategies": tuple(s for s in self.strategies if s.name in names)})

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        data["scenario"] = scenario_to_dict(self.scenario)
        data["strategies"] = [{**s.model_dump(mode="json"),
                               "extensions": {k: v.model_dump(mode="json") for k, v in s.extensions.items()}}
                              for s in self.strategies]
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str, extensions: tuple[Extension, ...] = (), file: Path | None = None) -> "Plan":
        """The plan :meth:`to_json` wrote (a run folder's ``plan.json``); extension blocks come back
        as their owners' objects. Nothing is resolved again."""
        try:
            data = json.loads(text)
            owners = {e.key: e for e in extensions}
            for s in data["strategies"]:
                s["extensions"] = {k: owners[k].load(v) for k, v in s.get("extensions", {}).items()}
            return cls.model_validate(data)
        except (ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, ValidationError):
                raise validation_to_error(file, exc) from None
            raise ConfigError(file, None, f"unreadable plan ({type(exc).__name__}: {exc})") from None


def resolve(file: str | Path, *, seeds: list[int] | None = None, only: list[str] | None = None,
            extensions: tuple[Extension, ...] = ()) -> Plan:
    """Scenario file -> checked Plan (``seeds`` override the scenario's; ``only``: a subset)."""
    return resolve_scenario(load_scenario(file), Path(file), seeds=seeds, only=only, extensions=extensions)


def resolve_scenario(scenario: Scenario, file: Path | None = None, *, seeds: list[int] | None = None,
                     only: list[str] | None = None, extensions: tuple[Extension, ...] = ()) -> Plan:
    """A scenario already parsed (``file`` names it in errors; relative preset paths start there)."""
    if seeds:
        if len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ConfigError(None, "--seeds", f"expected distinct non-negative integers, got {seeds}")
        scenario = scenario.model_copy(update={"seed": seeds[0], "seeds": list(seeds) if len(seeds) > 1 else None})
    check_model(scenario.model, file)
    T = scenario.stream_length
    strategies = tuple(resolve_strategy(ref, file=file, index=k, experiences=T, extensions=extensions,
                                        train=scenario.train) for k, ref in enumerate(scenario.strategies))
    check_protocol(scenario, strategies, file)  # the protocol against the stream and every strategy
    check_validation_options(scenario, strategies, file)
    plan = Plan(file=Path(file or ".").resolve(), scenario=scenario, strategies=strategies)
    return plan.only(only) if only else plan


def check_validation_options(scenario: Scenario, strategies: tuple[StrategyPlan, ...], file: Path | None) -> None:
    """``train.patience`` (scores epochs) and ``train.calibrate`` (fits logit offsets) read the
    experiences' validation splits: the stream must have them, and the strategy must train whole
    experiences centrally (Flower clients hold no validation split; the online protocol trains
    each time step once)."""
    stream = scenario.stream
    for k, s in enumerate(strategies):
        for option, what, off in (("patience", "early stopping scores epochs", "patience: 0"),
                                  ("calibrate", "calibration fits logit offsets", "calibrate: none")):
            value = getattr(s.train, option)
            if not value or value == "none":
                continue
            field = f"train.{option}" if getattr(scenario.train, option) == value else f"strategies[{k}].train.{option}"
            if not getattr(stream, "val_per_experience", 0):
                raise ConfigError(file, field, f"{what} on validation splits; set stream.val_per_experience > 0, "
                                               f"or {off}")
            if "federated" in s.extensions:
                raise ConfigError(file, field, f"{s.name!r} is federated: its clients hold no validation split; "
                                               f"give it train: {{{off}}}")
            if stream.protocol == "online":
                raise ConfigError(file, field, f"the online protocol trains each time step once; set {off}")


def describe(plan: Plan) -> list[tuple[str, Any]]:
    """One line per strategy: its name and what builds it (for ``clsim validate``)."""
    out = []
    for s in plan.strategies:
        comps = ", ".join(str(c) for c in [s.template, *s.plugins])
        for value in s.extensions.values():
            comps = value.describe(comps)
        own = {k: v for k, v in s.train.model_dump().items() if v != getattr(plan.scenario.train, k)}
        if own:  # the strategy's own training options (its `train:` overrides)
            comps += f"; train {', '.join(f'{k}={v}' for k, v in own.items())}"
        out.append((s.name, comps))
    return out
