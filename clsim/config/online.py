"""Checks of the online protocol that need the stream and the strategies together.

``stream.protocol: online`` streams experiences 1..T−1 in time steps after a deployment fit on
experience 0 (``clsim.data.arrivals``, ``clsim.online``); what a strategy does with the arrivals
is its ``OnlinePolicyPlugin`` (presets ``frozen``, ``online``, ``periodic_online``,
``drift_refinetune``; a preset without one learns from every labelled batch). Everything here is
a ``ConfigError`` naming the field, found before any work starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from clsim.config import signatures
from clsim.config.errors import ConfigError

POLICY = "OnlinePolicyPlugin"
# river.drift's detectors the policy may name, and where each lives; DDM and EDDM watch a binary error
DETECTORS = {"ADWIN": "river.drift", "KSWIN": "river.drift", "PageHinkley": "river.drift",
             "DDM": "river.drift.binary", "EDDM": "river.drift.binary"}
BINARY = ("DDM", "EDDM")
EXPERIENCE_ONLY = ("PeriodicRefinetunePlugin",)  # counts experiences; online: periodic_online counts steps


def check(scenario: Any, strategies: tuple, file: Path | None) -> None:
    """Raise a ConfigError for an online setting that cannot run (or a policy without the protocol)."""
    stream = scenario.stream
    online = stream.protocol == "online"
    for k, s in enumerate(strategies):
        policy = s.plugin(POLICY)
        if not online:
            if policy is not None:
                raise ConfigError(file, f"strategies[{k}].preset", f"{s.preset!r} decides when to learn from "
                                  "arriving data; it needs stream.protocol: online")
            continue
        if "federated" in s.extensions:
            raise ConfigError(file, f"strategies[{k}].preset", "federated strategies run the experiences "
                                                               "protocol only; remove it or set stream.protocol: experiences")
        bad = next((p.cls for p in s.plugins if p.cls in EXPERIENCE_ONLY), None)
        if bad:
            raise ConfigError(file, f"strategies[{k}].preset", f"{bad} counts experiences; under stream.protocol: "
                                                               "online use periodic_online (every: N time steps)")
        if policy is not None:
            _check_policy(policy.params, k, file)
    if not online:
        return
    if scenario.stream_length < 2:
        raise ConfigError(file, "stream.experiences", "the online protocol needs at least two experiences: the "
                                                      "first is the deployment fit, the others arrive")
    steps = stream.train_per_experience // stream.arrival_batch
    if steps < 1:
        raise ConfigError(file, "stream.arrival_batch", f"{stream.arrival_batch} is more than train_per_experience "
                                                        f"({stream.train_per_experience}): no time step would be full")
    if stream.transition.kind == "gradual" and stream.transition.width > steps:
        raise ConfigError(file, "stream.transition.width",
                          f"{stream.transition.width} is longer than an experience ({stream.train_per_experience} "
                          f"// {stream.arrival_batch} = {steps} time steps); expected at most {steps}")


def _check_policy(params: dict, k: int, file: Path | None) -> None:
    if params.get("update") != "drift":
        return
    name = params.get("detector", "ADWIN")
    if name in BINARY and params.get("signal", "error") != "error":
        raise ConfigError(file, f"strategies[{k}].signal", f"{name} watches a binary error; use signal: error, "
                                                           "or ADWIN / KSWIN / PageHinkley for confidence")
    info = signatures.class_info(DETECTORS[name], name)
    if info is None:  # river missing: building the detector will say so
        return
    accepts = {p.name: p for p in info.params}
    for key, value in (params.get("detector_params") or {}).items():
        if key not in accepts:
            raise ConfigError(file, f"strategies[{k}].detector_params.{key}",
                              f"unknown parameter for river's {name}; expected one of {sorted(accepts)}")
        if (why := signatures.check(accepts[key], value)) is not None:
            raise ConfigError(file, f"strategies[{k}].detector_params.{key}", f"{name}: {why}")
