"""Sinks: TensorBoard event files read back, atomic writes, results/ files."""
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
from tensorboard.plugins.hparams import plugin_data_pb2

from clsim import metrics as M
from clsim import sinks as S

NAMES = ["airlines", "deflategate", "cars"]
R = [
    [0.80, 0.30, 0.20],
    [0.60, 0.90, 0.40],
    [0.50, 0.70, 0.95],
]
Z = [0.10, 0.20, 0.30]


def load(log_dir):
    ea = EventAccumulator(str(log_dir), size_guidance={k: 0 for k in
                          ("scalars", "images", "tensors", "histograms", "audio", "compressedHistograms")})
    ea.Reload()
    return ea


def scalars(ea, tag):
    return [(e.step, e.value) for e in ea.Scalars(tag)]


# ---------------------------------------------------------------- TensorBoard

def test_scalars_rows_zero_shot_and_running(tmp_path):
    run = M.running(R, Z)
    with S.TensorBoardSink(tmp_path / "tb") as sink:
        sink.log_zero_shot(Z, NAMES)
        for i, row in enumerate(R):
            sink.log_row(i, row, NAMES, {k: v[i] for k, v in run.items()})
        sink.log_scalar("train/loss", 1.25, 7)
        sink.log_scalar("train/reg_ratio", float("nan"), 8)  # skipped
    ea = load(tmp_path / "tb")
    tags = set(ea.Tags()["scalars"])
    expected = ({f"accuracy/{n}" for n in NAMES} | {f"zero_shot/{n}" for n in NAMES}
                | {f"stream/{k}" for k in M.NAMES} | {"train/loss"})
    assert tags == expected
    for j, n in enumerate(NAMES):
        got = scalars(ea, f"accuracy/{n}")
        assert [s for s, _ in got] == [0, 1, 2]
        assert [v for _, v in got] == pytest.approx([R[i][j] for i in range(3)])
        assert scalars(ea, f"zero_shot/{n}") == [(0, pytest.approx(Z[j]))]
    acc = scalars(ea, "stream/acc")
    assert [s for s, _ in acc] == [0, 1, 2]
    assert acc[-1][1] == pytest.approx(M.acc(R))
    # bwt/fwt/forgetting are undefined (NaN) after the first experience: not logged at step 0
    for k in ("bwt", "fwt", "forgetting"):
        got = scalars(ea, f"stream/{k}")
        assert [s for s, _ in got] == [1, 2], k
        assert got[-1][1] == pytest.approx(M.summarize(R, Z)[k], abs=1e-6)
    assert scalars(ea, "train/loss") == [(7, pytest.approx(1.25))]


def test_row_length_mismatch_raises(tmp_path):
    with S.TensorBoardSink(tmp_path) as sink:
        with pytest.raises(ValueError):
            sink.log_row(0, [0.1, 0.2], NAMES, {})
        with pytest.raises(ValueError):
            sink.log_zero_shot([0.1], NAMES)


def test_matrix_image_is_png(tmp_path):
    with S.TensorBoardSink(tmp_path) as sink:
        sink.log_matrix(R[:2], NAMES, step=1)  # partial matrix during the run
        sink.log_matrix(R, NAMES, step=2)
    ea = load(tmp_path)
    assert ea.Tags()["images"] == ["accuracy_matrix"]
    events = ea.Images("accuracy_matrix")
    assert [e.step for e in events] == [1, 2]
    raw = events[-1].encoded_image_string
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(raw))
    assert (img.width, img.height) == (events[-1].width, events[-1].height)
    assert 150 <= img.width <= 2000 and 150 <= img.height <= 2000
    px = np.asarray(img.convert("RGB"))
    assert len(np.unique(px.reshape(-1, 3), axis=0)) > 20  # a real drawing, not a blank canvas


def test_matrix_shape_checked():
    with pytest.raises(ValueError):
        S.render_matrix([[0.1, 0.2]], NAMES)


def test_hparams_in_same_dir(tmp_path):
    summary = M.summarize([[0.7]], [0.4])  # bwt/fwt/forgetting are NaN
    hp = {"strategy": "ewc", "lr": 1e-3, "epochs": 2, "frozen": True, "layers": [4, 5], "none": None}
    with S.TensorBoardSink(tmp_path) as sink:
        sink.log_hparams(hp, summary, experiment=True)
    # one event file, directly in log_dir: no sub-run
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and entries[0].is_file() and "tfevents" in entries[0].name

    ea = load(tmp_path)
    content = ea.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {m.name.tag for m in exp.metric_infos} == {f"hparam/{k}" for k in M.NAMES}
    ssi = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert ssi.hparams["strategy"].string_value == "ewc"
    assert ssi.hparams["lr"].number_value == pytest.approx(1e-3)
    assert ssi.hparams["epochs"].number_value == 2
    assert ssi.hparams["frozen"].string_value == "True"  # not torch's number 1
    assert ssi.hparams["layers"].string_value == "[4, 5]"
    assert ssi.hparams["none"].string_value == "None"
    # metric values come from scalars with the same tags; NaN ones are skipped
    tags = set(ea.Tags()["scalars"])
    assert tags == {"hparam/acc", "hparam/learning_acc"}
    assert scalars(ea, "hparam/acc") == [(0, pytest.approx(0.7))]


# ---------------------------------------------------------------- atomic writes

def test_atomic_write_roundtrip(tmp_path):
    p = S.atomic_write_text(tmp_path / "sub" / "a.txt", "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    S.atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert os.listdir(p.parent) == ["a.txt"]


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_atomic_write_failure_keeps_old_content(tmp_path, monkeypatch, target):
    p = tmp_path / "metrics.json"
    S.write_json(p, {"acc": 0.5})
    old = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk on fire")

    monkeypatch.setattr(S.os, target, boom)
    with pytest.raises(OSError, match="disk on fire"):
        S.write_json(p, {"acc": 0.9, "big": list(range(1000))})
    monkeypatch.undo()
    assert p.read_bytes() == old
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temp file left behind


def test_write_json_nan_and_numpy(tmp_path):
    obj = {"bwt": float("nan"), "fwt": np.float32("inf"), "acc": np.float64(0.25),
           "n": np.int64(3), "row": np.array([0.5, np.nan]), "t": (1, 2), "path": Path("x/y")}
    p = S.write_json(tmp_path / "m.json", obj)
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert text.startswith('{\n  "')  # indent 2

    def reject(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    data = json.loads(text, parse_constant=reject)
    assert data == {"bwt": None, "fwt": None, "acc": 0.25, "n": 3, "row": [0.5, None],
                    "t": [1, 2], "path": "x/y"}


def test_write_csv(tmp_path):
    p = S.write_csv(tmp_path / "t.csv", ["a", "b"], [[1, None], ["x,y", float("nan")]])
    assert p.read_text() == 'a,b\n1,\n"x,y",\n'


# ---------------------------------------------------------------- results/

def strategy_metrics(name="naive", bwt=None):
    s = M.summarize(R, Z)
    if bwt is not None:
        s["bwt"] = bwt
    return {
        "strategy": name,
        "experiences": NAMES,
        "accuracy_matrix": R,
        "zero_shot": Z,
        **s,
        "running": M.running(R, Z),
        "costs": {"train_s": 12.5, "eval_s": 3.25, "samples": 1200, "trainable_params": 22_700_000},
    }


def test_write_strategy_results(tmp_path):
    d = tmp_path / "naive"
    S.write_strategy_results(d, strategy_metrics(bwt=float("nan")))
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


def test_write_summary(tmp_path):
    flat = {"strategy": "replay", "acc": 0.5, "bwt": float("nan"), "fwt": 0.1, "forgetting": 0.0,
            "learning_acc": 0.6, "train_s": 1.0, "eval_s": 2.0, "samples": 10, "trainable_params": 5}
    rows = [strategy_metrics("naive"), strategy_metrics("ewc|x"), flat]
    S.write_summary(tmp_path, rows, incomplete=["lwf", "ewc|x"])
    with open(tmp_path / "summary.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["strategy"] for r in got] == ["naive", "ewc|x", "replay"]
    assert list(got[0]) == list(S.SUMMARY_COLUMNS)
    assert float(got[0]["acc"]) == pytest.approx(M.acc(R))
    assert got[0]["samples"] == "1200" and got[0]["train_s"] == "12.5"
    assert got[2]["bwt"] == ""

    md = (tmp_path / "summary.md").read_text().splitlines()
    assert md[0] == "| " + " | ".join(S.SUMMARY_COLUMNS) + " |"
    body = [l for l in md[2:] if l.startswith("|")]
    assert len(body) == 3
    naive = [c.strip() for c in body[0].strip("|").split("|")]
    s = M.summarize(R, Z)
    assert naive == ["naive", f"{s['acc']:.3f}", f"{s['bwt']:.3f}", f"{s['fwt']:.3f}",
                     f"{s['forgetting']:.3f}", f"{s['learning_acc']:.3f}",
                     "12.500", "3.250", "1200", "22700000"]
    assert naive[1] == "0.717"
    assert "ewc\\|x" in body[1]
    assert "| —" in body[2]  # NaN bwt
    assert md[-1].startswith("Incomplete") and "lwf" in md[-1] and "ewc|x" in md[-1]
    assert sorted(os.listdir(tmp_path)) == ["summary.csv", "summary.md"]

    S.write_summary(tmp_path, rows[:1])
    assert "Incomplete" not in (tmp_path / "summary.md").read_text()
