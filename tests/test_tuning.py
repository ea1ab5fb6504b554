"""`clsim tune`: the search space, its checks, and a real Ray Tune search whose trials never see a
test split (asserted on the texts each trial's evaluation counted)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import plan_of, scenario_dict
from typer.testing import CliRunner

from clsim.cli import app
from clsim.config import ConfigError
from clsim.config.scenario import Dimension

VAL, TEST = 12, 16


def tune_scenario(**kw) -> dict:
    data = scenario_dict(strategies=["naive", "ewc"], **kw)
    data["stream"].update(train_per_experience=32, val_per_experience=VAL, test_per_experience=TEST)
    data["tune"] = {"samples": 2, "space": {"ewc": {"ewc_lambda": {"loguniform": [1.0e+2, 1.0e+5]}}}}
    return data


def test_validation_stream_swaps_test_for_validation(make_scenario, tokens_for):
    from clsim.tuning import validation_stream

    sc = make_scenario(**{k: v for k, v in tune_scenario().items() if k in ("stream",)})
    tokens = tokens_for(sc)
    val = validation_stream(tokens)
    assert [len(s.labels) for s in val.test] == [VAL] * 3 and val.val == []
    for got, want in zip(val.test, tokens.val):
        assert got is want  # the validation splits themselves
    test_ids = {x.tobytes() for s in tokens.test for x in s.ids}
    assert not test_ids & {x.tobytes() for s in val.test for x in s.ids}  # no test text reaches a trial
    with pytest.raises(ConfigError, match="val_per_experience"):
        validation_stream(tokens_for(make_scenario()))  # no validation split: nothing to score on


def test_space_parsing_and_checks(make_scenario):
    from clsim.tuning import check, parse_space

    space = parse_space(["ewc_lambda=loguniform:1e2:1e5", "mode=choice:separate,online"])
    assert space["ewc_lambda"].loguniform == (100.0, 100000.0) and space["mode"].choice == ["separate", "online"]
    for bad in ("ewc_lambda=loguniform:5", "x=gaussian:1:2", "ewc_lambda=uniform:3:1"):
        with pytest.raises(ConfigError, match="--space"):
            parse_space([bad])
    plan = plan_of(make_scenario(strategies=["naive", "ewc"]))
    check(plan, "ewc", space)
    check(plan, "ewc", parse_space(["train.epochs=grid:1,2"]))  # the recipe can be searched too
    with pytest.raises(ConfigError, match="train"):
        check(plan, "ewc", parse_space(["train.epochz=choice:1,2"]))
    with pytest.raises(ConfigError, match="unknown parameter"):
        check(plan, "ewc", {"ewc_lamda": Dimension(choice=[1.0])})
    with pytest.raises(ConfigError, match="valid number"):
        check(plan, "ewc", {"ewc_lambda": Dimension(choice=["lots"])})
    with pytest.raises(ConfigError, match="--strategy"):
        check(plan, "lwf", space)
    for patience in ("grid:1,2", "grid:0,2"):  # trials score on validation already
        with pytest.raises(ConfigError, match="early stopping would choose its epochs on the same data"):
            check(plan, "ewc", parse_space([f"train.patience={patience}"]))
    stopping = make_scenario(strategies=["naive", "ewc"], train={"epochs": 2, "patience": 1},
                             stream={**scenario_dict()["stream"], "val_per_experience": 8})
    with pytest.raises(ConfigError, match="early stopping"):
        check(plan_of(stopping), "ewc", space)  # the scenario's recipe reaches the trials


def test_trials_train_with_the_scenarios_and_the_entrys_recipe(make_scenario):
    from clsim.tuning import trial_strategy

    sc = make_scenario(strategies=["naive", {"preset": "ewc", "train": {"lr": 3e-4}}],
                       train={"epochs": 3, "batch_size": 8, "lr": 1e-3})
    trial = trial_strategy(plan_of(sc), "ewc", {"ewc_lambda": 10.0, "train.warmup": 0.2})
    assert (trial.train.epochs, trial.train.batch_size, trial.train.lr, trial.train.warmup) == (3, 8, 3e-4, 0.2)
    assert trial_strategy(plan_of(sc), "naive", {}).train.lr == 1e-3


def test_tune_block_is_validated(tmp_path):
    data = tune_scenario()
    data["tune"]["space"]["nope"] = {"ewc_lambda": {"choice": [1]}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    res = CliRunner().invoke(app, ["validate", str(path)])
    assert res.exit_code == 2 and "tune" in res.output and "nope" in res.output


def test_tune_searches_on_validation_only(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tune_scenario()))
    res = CliRunner().invoke(app, ["tune", str(path), "--strategy", "ewc", "--output", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    (folder,) = (tmp_path / "out" / "unit").iterdir()
    best = json.loads((folder / "best.json").read_text())
    assert best["strategy"] == "ewc" and best["split"] == "validation" and best["finished"] == 2
    assert 1e2 <= best["config"]["ewc_lambda"] <= 1e5
    trials = list((folder / "ray").glob("*/ewc/seed_0/metrics.json"))
    assert len(trials) == 2
    for f in trials:  # what each trial evaluated: the validation sets (12 texts each), never the test sets (16)
        doc = json.loads(f.read_text())
        counted = np.asarray(doc["confusion"]["rows"]).sum(axis=(2, 3))
        assert (counted == VAL).all()
    lines = (folder / "trials.csv").read_text().strip().splitlines()
    assert len(lines) == 3 and lines[0].startswith("ewc_lambda,bal_acc (validation)")
    assert (folder / "plan.json").is_file() and (folder / "splits.json").is_file()


def test_the_shipped_tune_never_validates_on_make_runs_test_tweets():
    """scenarios/drift_sentiment_tune.yaml draws as drift_sentiment.yaml does for the same seed, so no
    tweet it tunes on is one of `make run`'s test tweets. (The draw fills train, then validation, then
    test, per class: a larger val_per_experience in the tune would take the main run's test tweets.)"""
    from pathlib import Path

    from clsim.config import load_scenario
    from clsim.data.stream import build_stream

    root = Path(__file__).resolve().parents[1] / "scenarios"
    tune, main = load_scenario(root / "drift_sentiment_tune.yaml"), load_scenario(root / "drift_sentiment.yaml")
    assert tune.run_seeds == [0] and 0 in main.run_seeds
    tuned, served = build_stream(tune.stream, 0), build_stream(main.stream, 0)
    test_rows = {e.name: set(e.test.rows.tolist()) for e in served.experiences}
    for e in tuned.experiences:
        for part in (e.train, e.val):
            assert len(part.rows) > 0 and not set(part.rows.tolist()) & test_rows[e.name], e.name
