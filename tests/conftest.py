"""Shared fixtures: a small synthetic stream tokenised once, scenario builders, and one real
`clsim run` per shipped smoke scenario that several test modules read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# tiny models train faster on one thread, and Ray actors started by tests use the other core
torch.set_num_threads(1)


def scenario_dict(**overrides) -> dict:
    """A small synthetic scenario on the tiny model; keyword overrides replace top-level keys."""
    base = {
        "name": "unit",
        "seed": 0,
        "stream": {"source": "synthetic", "experiences": ["food", "tech", "travel"],
                   "train_per_experience": 48, "test_per_experience": 24},
        "model": {"pretrained": "tiny", "finetune": "full", "max_length": 32},
        "train": {"epochs": 1, "batch_size": 16, "lr": 1.0e-3},
        "strategies": ["naive"],
    }
    base.update(overrides)
    return base


@pytest.fixture(scope="session")
def make_scenario():
    from clsim.config import Scenario

    return lambda **kw: Scenario.model_validate(scenario_dict(**kw))


@pytest.fixture(scope="session")
def tokens_for():
    """Tokenise a scenario's stream once per distinct stream config (cached for the session)."""
    from clsim.data import build_stream
    from clsim.models import tokenize_stream

    cache = {}

    def get(scenario):
        key = (scenario.stream.model_dump_json(), scenario.seed, scenario.model.pretrained, scenario.model.max_length)
        if key not in cache:
            cache[key] = tokenize_stream(build_stream(scenario.stream, scenario.seed), scenario.model)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def cli_run(tmp_path_factory):
    """``cli_run("smoke")``: one real ``clsim run scenarios/<name>.yaml --seed 0`` in a fresh Python
    (real Ray actors), made once per session and shared: the CLI's output checks (test_cli) and
    the golden metrics (test_golden) read the same run. Returns (run folder, stdout + stderr)."""
    root = Path(__file__).resolve().parents[1]
    runs: dict[str, subprocess.CompletedProcess] = {}

    def get(name: str) -> tuple[Path, str]:
        out = tmp_path_factory.getbasetemp() / f"cli_run_{name}"
        if name not in runs:
            runs[name] = subprocess.run([sys.executable, "-m", "clsim.cli", "run", str(root / "scenarios" / f"{name}.yaml"),
                                         "--output", str(out), "--run-id", "g", "--device", "cpu", "--seed", "0"],
                                        capture_output=True, text=True, timeout=900, cwd=root)
        proc = runs[name]
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return out / name / "g", proc.stdout + proc.stderr

    return get


def resolve(ref, file=None, index: int = 0, experiences: int = 6, train=None):
    """A strategy plan from a scenario's strategy entry (a name, a mapping or a StrategyRef).
    ``train``: the scenario's TrainConfig (a Learner trains as the plan says, ``spec.train``;
    default: TrainConfig's defaults)."""
    from clsim.config import StrategyRef
    from clsim.config.presets import resolve_strategy
    from clsim.federated.schema import FEDERATED

    ref = ref if isinstance(ref, StrategyRef) else StrategyRef.model_validate(ref)
    return resolve_strategy(ref, file=file, index=index, experiences=experiences, extensions=(FEDERATED,),
                            train=train)


def plan_of(scenario, file=None):
    """The checked plan of a parsed scenario (what `clsim run` passes on)."""
    from clsim.config import resolve_scenario
    from clsim.federated.schema import FEDERATED

    return resolve_scenario(scenario, file, extensions=(FEDERATED,))
