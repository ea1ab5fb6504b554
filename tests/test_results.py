"""Results: metrics documents and their files, the one summary table, the heatmap."""
import csv
import io
import json
import os

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clsim import metrics as M
from clsim import results as RS
from clsim.sinks import TensorBoardSink

NAMES = ["airlines", "deflategate", "cars"]
R = [
    [0.80, 0.30, 0.20],
    [0.60, 0.90, 0.40],
    [0.50, 0.70, 0.95],
]
Z = [0.10, 0.20, 0.30]
COSTS = {"train_seconds": 12.5, "eval_seconds": 3.25, "samples_trained": 1200, "trainable_params": 22_700_000}


def doc(name="naive", bwt=None, complete=True):
    d = RS.document(name, NAMES, Z, R, dict(COSTS), {"lr": 0.1})
    if bwt is not None:
        d["bwt"] = bwt
    d["complete"] = complete
    return d


def test_document_is_a_function_of_R_and_z():
    d = doc()
    assert d["complete"] and d["accuracy_matrix"] == R and d["zero_shot"] == Z
    assert {k: d[k] for k in M.NAMES} == M.summarize(R, Z)
    assert d["running"] == M.running(R, Z)
    partial = RS.document("naive", NAMES, Z, R[:1], dict(COSTS), {})
    assert not partial["complete"] and partial["acc"] == pytest.approx(0.80)  # R[0][0] only


def test_write_strategy_results(tmp_path):
    d = tmp_path / "naive"
    RS.write_strategy_results(d, doc(bwt=float("nan")))
    assert sorted(os.listdir(d)) == ["accuracy_matrix.csv", "metrics.json"]
    data = json.loads((d / "metrics.json").read_text())
    assert data["strategy"] == "naive"
    assert data["bwt"] is None
    assert data["running"]["bwt"][0] is None  # NaN at k=1
    assert data["accuracy_matrix"] == R
    with open(d / "accuracy_matrix.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["trained_on", *NAMES]
    assert rows[1][0] == "zero_shot" and [float(x) for x in rows[1][1:]] == Z
    assert [r[0] for r in rows[2:]] == NAMES
    assert [[float(x) for x in r[1:]] for r in rows[2:]] == R


def test_summary_csv_and_markdown_read_one_column_table(tmp_path):
    docs = [doc("naive"), doc("ewc|x", complete=False), doc("replay", bwt=float("nan"))]
    RS.write_summary(tmp_path, docs)
    cols, _ = RS.table(docs)
    keys = [c.key for c in cols]
    assert keys == ["strategy", *M.NAMES, "train_s", "eval_s", "samples", "trainable_params", "complete"]
    with open(tmp_path / "summary.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["strategy"] for r in got] == ["naive", "ewc|x", "replay"]
    assert list(got[0]) == keys
    assert float(got[0]["acc"]) == pytest.approx(M.acc(R))
    assert got[0]["samples"] == "1200" and got[0]["train_s"] == "12.5"
    assert got[2]["bwt"] == ""

    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0] == "| " + " | ".join(keys) + " |"
    body = [line for line in md[2:] if line.startswith("|")]
    naive = [c.strip() for c in body[0].strip("|").split("|")]
    s = M.summarize(R, Z)
    assert naive == ["naive", f"{s['acc']:.3f}", f"{s['bwt']:+.3f}", f"{s['fwt']:.3f}", f"{s['forgetting']:.3f}",
                     f"{s['learning_acc']:.3f}", "12.5", "3.2", "1,200", "22,700,000", "yes"]
    assert naive[1] == "0.717"
    assert "ewc\\|x" in body[1] and body[1].endswith("| no |")
    assert "| —" in body[2]  # NaN bwt
    assert md[-1] == "Incomplete strategies (partial or missing results): ewc|x"

    RS.write_summary(tmp_path, docs[:1])  # all complete: no `complete` column, no note
    md = (tmp_path / "summary.md").read_text()
    assert "Incomplete" not in md and "complete" not in md.splitlines()[0]


def test_byte_columns_only_for_federated_runs():
    fed = {**doc("fedavg"), "bytes_up": [10, 20], "bytes_down": [1000, 2000]}
    cols, rows = RS.table([doc(), fed])
    keys = [c.key for c in cols]
    assert "bytes_up" in keys and "bytes_down" in keys
    assert rows[1][keys.index("bytes_up")] == 30.0 and rows[0][keys.index("bytes_up")] is None
    assert RS.fmt(3000.0, "bytes") == "3.0 KB" and RS.fmt(None, "bytes") == "—"
    assert "bytes_up" not in [c.key for c in RS.table([doc()])[0]]


def test_matrix_image_in_tensorboard(tmp_path):
    with TensorBoardSink(tmp_path) as sink:
        sink.log_image("accuracy_matrix", RS.matrix_image(R[:2], NAMES), 1)  # partial matrix during the run
        sink.log_image("accuracy_matrix", RS.matrix_image(R, NAMES), 2)
    ea = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    ea.Reload()
    events = ea.Images("accuracy_matrix")
    assert [e.step for e in events] == [1, 2]
    raw = events[-1].encoded_image_string
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(raw))
    assert 150 <= img.width <= 2000 and 150 <= img.height <= 2000
    px = np.asarray(img.convert("RGB"))
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 20  # a real drawing, not a blank canvas


def test_matrix_shape_checked():
    with pytest.raises(ValueError):
        RS.matrix_image([[0.1, 0.2]], NAMES)
