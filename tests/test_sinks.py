"""Sinks: TensorBoard event files read back, atomic writes."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
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
