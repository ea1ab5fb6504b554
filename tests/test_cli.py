"""The command line end to end: `clsim run` on the smoke scenario through real Ray actors,
every output file, TensorBoard events read back; `validate` and `list`."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clsim.cli import EXTENSIONS, app
from clsim.config.plan import resolve
from clsim.results import read_plan
from clsim.tuning import TUNE_FILE

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "scenarios" / "smoke.yaml"
runner = CliRunner()


@pytest.fixture(scope="module")
def smoke_run(cli_run):
    """One real `clsim run` of the smoke scenario (every core strategy, one actor each), in a fresh
    Python; the same run test_golden compares with its golden metrics (``cli_run`` in conftest)."""
    return cli_run("smoke")


def smoke_strategies() -> list[str]:
    from clsim.config import load_scenario

    return [s.run_name for s in load_scenario(SMOKE).strategies]


def test_run_writes_every_output(smoke_run):
    run_dir, stdout = smoke_run
    names = smoke_strategies()
    assert (run_dir / "scenario.yaml").is_file() and (run_dir / "plan.json").is_file()
    splits = json.loads((run_dir / "splits.json").read_text())["seeds"]["0"]
    assert sorted(splits["experiences"]) == sorted(json.loads((run_dir / names[0] / "metrics.json").read_text())
                                                    ["experiences"])
    rows = list(csv.DictReader((run_dir / "summary.csv").open()))
    assert [r["strategy"] for r in rows] == names + ["majority class"]  # the reference row last
    md = (run_dir / "summary.md").read_text()
    for name in names:
        assert f"| {name} " in md
        assert name in stdout
        doc = json.loads((run_dir / name / "metrics.json").read_text())
        T = len(doc["experiences"])
        assert len(doc["accuracy_matrix"]) == T and all(len(r) == T for r in doc["accuracy_matrix"])
        assert len(doc["zero_shot"]) == T
        for key in ("acc", "bwt", "fwt", "forgetting", "learning_acc"):
            assert key in doc
        assert doc["costs"]["trainable_params"] > 0 and doc["costs"]["samples_trained"] > 0
        lines = (run_dir / name / "accuracy_matrix.csv").read_text().strip().splitlines()
        assert len(lines) == T + 2  # header, zero-shot row, one row per trained experience
    assert f"tensorboard --logdir {run_dir}" in stdout.replace("\n", "")


def test_console_shows_clsim_not_library_notices(smoke_run):
    run_dir, output = smoke_run
    for noise in ("Token authentication", "LOAD REPORT", "DeprecationWarning", "Traceback"):
        assert noise not in output, noise
    assert (run_dir / "run.log").is_file()  # where library notices go instead


def test_tensorboard_events_read_back(smoke_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = smoke_run
    for name in smoke_strategies():
        doc = json.loads((run_dir / name / "metrics.json").read_text())
        ea = EventAccumulator(str(run_dir / name / "seed_0"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        ea.Reload()
        tags = ea.Tags()
        for j, exp in enumerate(doc["experiences"]):
            events = ea.Scalars(f"accuracy/{exp}")
            assert [e.step for e in events] == list(range(len(doc["experiences"])))
            assert events[-1].value == pytest.approx(doc["accuracy_matrix"][-1][j], abs=1e-6)
        acc = ea.Scalars("stream/acc")
        assert acc[-1].value == pytest.approx(doc["acc"], abs=1e-6)
        assert "accuracy_matrix" in tags["images"]
        assert "train/reg_ratio" in tags["scalars"]
        assert ea.PluginTagToContent("hparams"), "an hparams entry per strategy"


def test_validate_prints_the_plan():
    result = runner.invoke(app, ["validate", str(SMOKE)])
    assert result.exit_code == 0, result.output
    assert "scenario smoke" in result.output
    for name in smoke_strategies():
        assert f"strategy {name}:" in result.output
    assert "48 train / 0 val / 24 test" in result.output


@pytest.mark.parametrize("scenario", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_scenario_validates(scenario):
    """The scenarios the README and the Makefile run (reports take an hour: a typo must not wait for them)."""
    result = runner.invoke(app, ["validate", str(scenario)])
    assert result.exit_code == 0, result.output
    assert f"ok {scenario}" in " ".join(result.output.split())


COMMITTED_RUNS = sorted(p.parent for p in (ROOT / "results").glob("*/*/plan.json")
                        if not (p.parent / TUNE_FILE).exists())  # a tune's trials override its plan


@pytest.mark.parametrize("run_dir", COMMITTED_RUNS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_runs_are_what_their_scenarios_resolve_to_today(run_dir):
    """The README's numbers come from committed run folders, and the Makefile's report targets
    regenerate them from the scenarios. That holds only while each scenario still resolves to the
    plan its run was made with: a preset changed without regenerating, or pinning, fails here."""
    then = read_plan(run_dir, EXTENSIONS)
    now = resolve(then.file, extensions=EXTENSIONS)
    assert now.scenario.stream == then.scenario.stream and now.scenario.model == then.scenario.model
    ran = {p.parent.parent.name for p in run_dir.glob("*/seed_*/metrics.json")}  # <strategy>/seed_<k>/
    assert ran, f"{run_dir} holds no strategy's metrics"
    for s in then.strategies:
        if s.name in ran:
            assert now.strategy(s.name) == s, f"{run_dir.name}: {s.name} resolves differently today"


def test_list_shows_scenarios_and_presets():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    for word in ("drift_sentiment", "smoke", "naive", "periodic_refinetune", "ewc", "replay"):
        assert word in result.output


@pytest.mark.parametrize("content,field", [
    ("name: x\nstream: [", "line"),
    ("- a\n- b\n", "mapping"),
    ("name: x\nseed: 0\nstream: {source: tweets, experiences: [airline], train_per_experience: 5, "
     "test_per_experience: 5}\nstrategies: [naive]\ncolour: blue\n", "colour"),
    ("name: x\nstream: {source: tweets, experiences: [mars], train_per_experience: 5, test_per_experience: 5}\n"
     "strategies: [naive]\n", "stream.experiences[0]"),
    ("name: x\nstream: {source: synthetic, experiences: [food], train_per_experience: 5, test_per_experience: 5}\n"
     "train: {lr: -1}\nstrategies: [naive]\n", "train.lr"),
    ("name: x\nstream: {source: synthetic, experiences: [food], train_per_experience: 5, test_per_experience: 5}\n"
     "strategies: [sgd_magic]\n", "strategies[0].preset"),
])
def test_bad_scenarios_exit_2_with_one_line(tmp_path, content, field):
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert str(bad) in result.output and field in result.output
    assert "Traceback" not in result.output
