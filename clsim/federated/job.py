"""What the server and every client share: the scenario and the federated strategy run.

The server resolves the job once and sends it to every client in a ``query`` message before
the first round (a ``ConfigRecord`` holding the scenario and the ``federated`` block as JSON
and the strategy's run name); clients keep it in ``context.state``. A client resolves the
local preset (which imports Avalanche) only when it trains — a SuperNode starts a fresh
process per message, so the query and evaluate handlers stay light.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from flwr.app import ConfigRecord

from clsim.config import ConfigError, Scenario, load_scenario, scenario_to_dict
from clsim.federated.spec import FederatedConfig

KEY = "clsim.job"


@dataclass(frozen=True, eq=False)  # hashed by identity: ``from_record`` returns one cached Job per job
class Job:
    scenario: Scenario
    name: str  # the strategy's run name in the scenario
    fed: FederatedConfig
    _spec: list = field(default_factory=list, repr=False)  # the ResolvedStrategy, once resolved
    state_dir: str = ""  # where clients also keep their CL state on disk (resumable runs); "" = nowhere

    @property
    def spec(self):
        """The resolved strategy (``spec.federated`` is ``fed``; template + plugins: each client's)."""
        if not self._spec:
            self._spec.append(resolve_job(self.scenario, self.name).spec)
        return self._spec[0]

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({"scenario": json.dumps(scenario_to_dict(self.scenario)), "strategy": self.name,
                             "federated": self.fed.model_dump_json(), "state-dir": self.state_dir})

    @staticmethod
    def from_record(record: ConfigRecord) -> "Job":
        return _job_from_json(str(record["scenario"]), str(record["strategy"]), str(record["federated"]),
                              str(record.get("state-dir", "")))


def resolve_job(scenario: Scenario, strategy: str | None, file: str | Path | None = None) -> Job:
    """The federated strategy ``strategy`` of ``scenario`` (default: its first federated one), resolved."""
    from clsim.strategies import resolve

    specs = [resolve(ref, file, k) for k, ref in enumerate(scenario.strategies)]
    fed = [s for s in specs if s.federated is not None]
    if not fed:
        raise ConfigError(file, "strategies", "no federated strategy (a preset with a `federated:` block) to run")
    chosen = next((s for s in fed if s.name == strategy), None) if strategy else fed[0]
    if chosen is None:
        raise ConfigError(file, "strategy", f"{strategy!r} is not a federated strategy of scenario "
                                            f"{scenario.name!r}; expected one of {[s.name for s in fed]}")
    return Job(scenario, chosen.name, chosen.federated, [chosen])


@lru_cache(maxsize=8)
def _job_from_json(scenario_json: str, strategy: str, federated_json: str, state_dir: str) -> Job:
    return Job(Scenario.model_validate(json.loads(scenario_json)), strategy,
               FederatedConfig.model_validate_json(federated_json), state_dir=state_dir)


def load_job(scenario_file: str | Path, strategy: str | None = None, search: tuple[Path, ...] = ()) -> Job:
    """A job from a scenario file; a relative path is tried in the working directory, then in ``search``."""
    path = Path(scenario_file)
    if not path.is_absolute() and not path.is_file():
        for root in search:
            if (root / path).is_file():
                path = root / path
                break
    scenario = load_scenario(path)
    return resolve_job(scenario, strategy, path)
