"""What the server and every client share: the resolved plan and the federated strategy to run.

The server sends the job to every client in a ``query`` message before the first round (a
``ConfigRecord`` holding the plan as JSON, the strategy's run name, the run it belongs to and
where clients keep their state on disk); clients keep it in ``context.state``. Nothing is
resolved again on a client: the plan arrives checked.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from flwr.app import ConfigRecord

from clsim.config import ConfigError, Plan, Scenario, StrategyPlan, resolve
from clsim.federated.schema import FEDERATED, FederatedConfig
from clsim.results import seed_dir

KEY = "clsim.job"


@dataclass(frozen=True, eq=False)  # hashed by identity: ``from_record`` returns one cached Job per job
class Job:
    plan: Plan
    name: str  # the strategy's run name in the plan
    state_dir: str = ""  # where clients keep their CL state on disk (resumable runs); "" = nowhere
    run: str = ""  # "<scenario>/<run id>": names a client's state folder on a node with its own (node config)

    @property
    def scenario(self) -> Scenario:
        return self.plan.scenario

    @property
    def spec(self) -> StrategyPlan:
        """The strategy: its federated block, and the template + plugins every client runs."""
        return self.plan.strategy(self.name)

    @property
    def fed(self) -> FederatedConfig:
        return self.spec.extensions[FEDERATED.key]

    def to_record(self) -> ConfigRecord:
        return ConfigRecord({"plan": self.plan.to_json(), "strategy": self.name, "state-dir": self.state_dir,
                             "run": self.run})

    @staticmethod
    def from_record(record: ConfigRecord) -> "Job":
        return _job(str(record["plan"]), str(record["strategy"]), str(record.get("state-dir", "")),
                    str(record.get("run", "")))

    def in_run(self, run_dir: str | Path) -> "Job":
        """This job as run in ``run_dir``: clients keep their state in ``<run_dir>/<strategy>/seed_<k>/clients``
        (one machine, or a file system every node shares) unless a node names its own folder."""
        run_dir = Path(run_dir).resolve()
        return replace(self, state_dir=str(seed_dir(run_dir, self.name, self.scenario.seed) / "clients"),
                       run=f"{run_dir.parent.name}/{run_dir.name}")


@lru_cache(maxsize=8)
def _job(plan_json: str, strategy: str, state_dir: str, run: str) -> Job:
    return Job(Plan.from_json(plan_json, (FEDERATED,)), strategy, state_dir, run)


def federated_job(plan: Plan, strategy: str | None = None) -> Job:
    """The federated strategy ``strategy`` of ``plan`` (default: its first federated one)."""
    fed = [s.name for s in plan.strategies if FEDERATED.key in s.extensions]
    if not fed:
        raise ConfigError(plan.file, "strategies", "no federated strategy (a preset with a `federated:` block) to run")
    if strategy is not None and strategy not in fed:
        raise ConfigError(plan.file, "strategy", f"{strategy!r} is not a federated strategy of scenario "
                                                 f"{plan.scenario.name!r}; expected one of {fed}")
    return Job(plan, strategy or fed[0])


def load_job(scenario_file: str | Path, strategy: str | None = None, search: tuple[Path, ...] = ()) -> Job:
    """A job from a scenario file (``flwr run``); a relative path is tried in the working
    directory, then in ``search``."""
    path = Path(scenario_file)
    if not path.is_absolute() and not path.is_file():
        for root in search:
            if (root / path).is_file():
                path = root / path
                break
    return federated_job(resolve(path, extensions=(FEDERATED,)), strategy)
