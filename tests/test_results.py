"""Results: metrics documents from confusion matrices, their files, aggregation over seeds; the heatmaps."""
import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clsim import figures
from clsim import metrics as M
from clsim import results as RS
from clsim.sinks import TensorBoardSink

NAMES = ["airlines", "cars"]
LABELS = ["negative", "neutral", "positive"]
COSTS = {"train_seconds": 12.5, "eval_seconds": 3.25, "samples_trained": 1200, "trainable_params": 22_700_000}
# test set of "airlines": 6 negative, 2 neutral, 2 positive; of "cars": 1 / 8 / 1
Z = [np.array([[0, 6, 0], [0, 2, 0], [0, 2, 0]]), np.array([[0, 1, 0], [0, 8, 0], [0, 1, 0]])]  # always "neutral"
ROW0 = [np.array([[5, 1, 0], [1, 1, 0], [0, 1, 1]]), np.array([[0, 1, 0], [0, 8, 0], [0, 1, 0]])]
ROW1 = [np.array([[2, 4, 0], [0, 2, 0], [0, 1, 1]]), np.array([[1, 0, 0], [0, 7, 1], [0, 0, 1]])]


def doc(seed=0, rows=(ROW0, ROW1), name="naive"):
    return RS.document(name, NAMES, LABELS, Z, [list(r) for r in rows], dict(COSTS), {"lr": 0.1, "seed": seed})


def test_document_is_a_function_of_the_confusion_matrices():
    d = doc()
    assert d["zero_shot"] == [0.2, 0.8]  # always "neutral": 2/10 and 8/10
    assert d["majority"] == [0.6, 0.8]
    assert d["accuracy_matrix"] == [[0.7, 0.8], [0.5, 0.9]]
    # balanced: mean recall over the labels present; row 0 airlines: (5/6 + 1/2 + 1/2) / 3
    assert d["balanced_accuracy_matrix"][0][0] == pytest.approx((5 / 6 + 0.5 + 0.5) / 3)
    assert d["balanced_zero_shot"] == [pytest.approx(1 / 3), pytest.approx(1 / 3)]  # a constant predictor: chance
    assert d["balanced_accuracy_matrix"][1][1] == pytest.approx((1 + 7 / 8 + 1) / 3)
    R, z = d["accuracy_matrix"], d["zero_shot"]
    assert {k: d[k] for k in M.NAMES} == M.summarize(R, z)
    assert d["serving_acc"] == pytest.approx(0.8)  # R[0][1]: cars before training on it
    assert d["bal_serving_acc"] == pytest.approx(1 / 3)
    assert d["confusion"]["rows"][1][0] == ROW1[0].tolist() and d["complete"] and d["seed"] == 0
    partial = RS.document("naive", NAMES, LABELS, Z, [list(ROW0)], dict(COSTS), {"seed": 0})
    assert not partial["complete"] and partial["acc"] == pytest.approx(0.7)  # R[0][0] only


def test_write_strategy_results(tmp_path):
    d = tmp_path / "naive"
    RS.write_strategy_results(d, doc())
    assert sorted(os.listdir(d)) == ["accuracy_matrix.csv", "balanced_accuracy_matrix.csv", "metrics.json"]
    data = json.loads((d / "metrics.json").read_text())
    assert data["strategy"] == "naive" and data["accuracy_matrix"] == [[0.7, 0.8], [0.5, 0.9]]
    assert data["running"]["bwt"][0] is None  # NaN at k=1 is JSON null
    with open(d / "accuracy_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["trained_on", *NAMES]
    assert rows[1][0] == "zero_shot" and [float(x) for x in rows[1][1:]] == [0.2, 0.8]
    assert [r[0] for r in rows[2:]] == NAMES


def test_aggregate_over_seeds_means_intervals_and_per_seed_values():
    a, b = doc(0), doc(1, rows=(ROW0, [ROW1[0], ROW0[1]]))  # seed 1 ends on cars at 0.8 instead of 0.9
    agg = RS.aggregate([a, b], [0, 1])
    assert agg["complete"] and agg["seeds"] == [0, 1] and agg["seeds_done"] == [0, 1]
    assert agg["per_seed"]["acc"] == {"0": pytest.approx(0.7), "1": pytest.approx(0.65)}
    assert agg["acc"] == pytest.approx(0.675)
    lo, hi = agg["intervals"]["acc"]
    mean, lo2, hi2 = M.interval([0.7, 0.65])
    assert (lo, hi) == (pytest.approx(lo2), pytest.approx(hi2)) and lo < 0.675 < hi
    assert agg["accuracy_matrix"] == [[0.7, 0.8], [0.5, pytest.approx(0.85)]]
    # diagonal margins over the majority rates (0.6, 0.8): airlines 0.1 in both seeds, cars 0.1 and 0.0
    (lo_a, hi_a), (lo_c, hi_c) = agg["intervals"]["diagonal_margin"]
    assert (lo_a, hi_a) == (pytest.approx(0.1), pytest.approx(0.1))  # no spread, no width
    _, lo_c2, hi_c2 = M.interval([0.1, 0.0])
    assert (lo_c, hi_c) == (pytest.approx(lo_c2), pytest.approx(hi_c2)) and lo_c < 0 < hi_c
    assert agg["costs"]["samples_trained"] == 1200 and isinstance(agg["costs"]["samples_trained"], int)
    assert "seed" not in agg["hparams"]
    partial = RS.aggregate([a], [0, 1])  # seed 1 still running
    assert not partial["complete"] and partial["acc"] == pytest.approx(0.7)
    assert math.isnan(partial["intervals"]["acc"][0])  # one seed: no interval
    assert math.isnan(partial["intervals"]["diagonal_margin"][1][0])


def test_partial_doc_reads_seed_folders(tmp_path):
    RS.write_strategy_results(RS.seed_dir(tmp_path, "naive", 0), doc(0))
    got = RS.partial_doc(tmp_path, "naive", [0, 1], error="boom")
    assert not got["complete"] and got["error"] == "boom" and got["seeds_done"] == [0]
    assert RS.finished_seeds(tmp_path, "naive", [0, 1]).keys() == {0}
    stub = RS.partial_doc(tmp_path, "replay", [0])
    assert stub["strategy"] == "replay" and not stub["complete"]


def test_matrix_and_confusion_images_in_tensorboard(tmp_path):
    R = doc()["accuracy_matrix"]
    with TensorBoardSink(tmp_path) as sink:
        sink.log_image("accuracy_matrix", figures.matrix_image(R[:1], NAMES), 1)  # partial matrix during the run
        sink.log_image("accuracy_matrix", figures.matrix_image(R, NAMES), 2)
        sink.log_image("confusion", figures.confusion_image(ROW1, NAMES, LABELS, "after cars"), 2)
    ea = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    ea.Reload()
    events = ea.Images("accuracy_matrix")
    assert [e.step for e in events] == [1, 2]
    for raw in (events[-1].encoded_image_string, ea.Images("confusion")[0].encoded_image_string):
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        img = Image.open(io.BytesIO(raw))
        assert 150 <= img.width <= 2000 and 150 <= img.height <= 2000
        px = np.asarray(img.convert("RGB"))
        assert len(np.unique(px.reshape(-1, 3), axis=0)) > 20  # a real drawing, not a blank canvas


def test_matrix_shape_checked():
    with pytest.raises(ValueError):
        figures.matrix_image([[0.1, 0.2, 0.3]], NAMES)


def test_plan_json_names_the_scenario_from_the_run_folder(tmp_path):
    """A run folder names no machine's folders: plan.json holds the scenario file's path from the
    run folder, and reading the plan back gives the absolute file again (what a resume and Flower
    clients resolve data paths against)."""
    import json

    from clsim.config import resolve
    from clsim.results import read_plan, write_plan

    scenario = tmp_path / "project" / "scenarios" / "s.yaml"
    scenario.parent.mkdir(parents=True)
    scenario.write_text((Path(__file__).resolve().parents[1] / "scenarios" / "smoke.yaml").read_text())
    run = tmp_path / "project" / "results" / "smoke" / "r1"
    run.mkdir(parents=True)
    write_plan(resolve(scenario), run)
    assert json.loads((run / "plan.json").read_text())["file"] == "../../../scenarios/s.yaml"
    assert str(tmp_path) not in (run / "plan.json").read_text()
    assert read_plan(run).file == scenario.resolve()


def test_run_log_names_no_machine_folders():
    """What libraries log into <run>/run.log (e.g. where weights were loaded from) names the
    installed packages' folder and the working folder by placeholders."""
    import logging
    import site

    from clsim.execution import PortableFormatter

    fmt = PortableFormatter("%(message)s")
    msg = f"from: {site.getsitepackages()[0]}/some_model/model; data {os.getcwd()}/results/x"
    line = fmt.format(logging.LogRecord("t", logging.WARNING, "", 0, msg, None, None))
    assert line == "from: <site-packages>/some_model/model; data ./results/x"
