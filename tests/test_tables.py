"""The summary tables: one column table with intervals, the majority-class reference row, paired
differences to naive, per-experience margins — checked against hand-computed values."""
import csv

import pytest

from clsim import metrics as M
from clsim import tables as TB


def agg(name, acc_by_seed, R=((0.7, 0.5), (0.6, 0.9)), complete=True):
    """A strategy over seeds as clsim.results.aggregate writes it (the fields the tables read)."""
    mean, lo, hi = M.interval(list(acc_by_seed.values()))
    return {"strategy": name, "seeds": [int(s) for s in acc_by_seed], "complete": complete,
            "experiences": ["a", "b"], "labels": ["neg", "neu", "pos"], "majority": [0.6, 0.8],
            "accuracy_matrix": [list(r) for r in R], "acc": mean, "intervals": {"acc": [lo, hi]},
            "per_seed": {"acc": dict(acc_by_seed)},
            "costs": {"train_seconds": 10.0, "samples_trained": 600, "eval_seconds": 1.0, "trainable_params": 5}}


NAIVE = agg("naive", {"0": 0.60, "1": 0.70, "2": 0.80})
REPLAY = agg("replay", {"0": 0.66, "1": 0.75, "2": 0.87}, R=((0.72, 0.5), (0.7, 0.85)))


def test_majority_row_is_the_constant_predictor_of_each_test_set():
    row = TB.majority_row([NAIVE])
    assert row["strategy"] == TB.MAJORITY
    assert row["acc"] == pytest.approx(0.7) and row["learning_acc"] == pytest.approx(0.7)  # mean of 0.6, 0.8
    assert row["serving_acc"] == pytest.approx(0.8)  # it serves b at its majority rate before "learning" it
    assert row["bal_acc"] == pytest.approx(1 / 3) and row["forgetting"] == 0.0


def test_table_cells_carry_intervals_and_csv_writes_their_bounds():
    cols, rows = TB.table([NAIVE, REPLAY])
    keys = [c.key for c in cols]
    assert keys[0] == "strategy" and "bytes_up" not in keys and "complete" not in keys
    assert [r[0].value for r in rows] == ["naive", "replay", TB.MAJORITY]
    acc = keys.index("acc")
    mean, lo, hi = M.interval([0.6, 0.7, 0.8])
    assert rows[0][acc].value == pytest.approx(mean) and rows[0][acc].interval == (pytest.approx(lo), pytest.approx(hi))
    assert TB.fmt(rows[0][acc], "metric") == f"0.700 ± {(hi - lo) / 2:.3f}"
    assert TB.fmt(rows[2][acc], "metric") == "0.700"  # the reference has no interval
    header, body = TB.csv_rows(cols, rows)
    assert header[header.index("acc"):header.index("acc") + 3] == ["acc", "acc_lo", "acc_hi"]
    assert body[0][header.index("acc_lo")] == pytest.approx(lo)


def test_differences_are_paired_over_common_seeds():
    (name, row), = TB.differences([NAIVE, REPLAY])
    mean, lo, hi, n = row["acc"]
    assert name == "replay" and n == 3
    assert mean == pytest.approx((0.06 + 0.05 + 0.07) / 3)
    m2, lo2, hi2 = M.paired_interval([0.66, 0.75, 0.87], [0.60, 0.70, 0.80])
    assert (lo, hi) == (pytest.approx(lo2), pytest.approx(hi2)) and lo > 0  # the seeds support replay > naive
    assert TB.differences([REPLAY]) == []  # no baseline, no table
    independent = {**agg("independent", {"0": 0.62, "1": 0.71, "2": 0.85}), "strategy": "independent"}
    md = "\n".join(TB.differences_markdown([NAIVE, REPLAY, independent], "independent"))
    assert "Difference to `independent`" in md and "| replay | +0.033 [" in md


def test_margins_compare_each_diagonal_with_its_majority_rate():
    md = TB.margins_markdown([NAIVE, REPLAY])
    rows = [line for line in md if line.startswith("| ") and not line.startswith("| experience")]
    assert rows[0] == "| a | 0.600 | 0.700 (+0.100) | 0.720 (+0.120) |"
    assert rows[1] == "| b | 0.800 | 0.900 (+0.100) | 0.850 (+0.050) |"
    # over seeds, each margin carries its interval (as clsim.results.aggregate writes it)
    _, lo, hi = M.interval([0.02, 0.05, 0.08])
    seeded = {**REPLAY, "intervals": {**REPLAY["intervals"], "diagonal_margin": [[0.1, 0.14], [lo, hi]]}}
    rows = [line for line in TB.margins_markdown([NAIVE, seeded]) if line.startswith("| b ")]
    assert rows == [f"| b | 0.800 | 0.900 (+0.100) | 0.850 (+0.050 [{lo:+.3f}, {hi:+.3f}]) |"] and lo < 0
    other = {**REPLAY, "experiences": ["b"], "accuracy_matrix": [[0.95]], "majority": [0.8]}  # another stream
    assert all("0.950" not in line for line in TB.margins_markdown([NAIVE, other]))


def test_diagonal_differences_pair_each_topic_over_seeds():
    diag = lambda *seeds: {str(k): list(v) for k, v in enumerate(seeds)}  # noqa: E731
    ind = {**agg("independent", {"0": 0.7, "1": 0.7, "2": 0.7}), "strategy": "independent"}
    ind["per_seed"] = {**ind["per_seed"], "diagonal": diag((0.80, 0.90), (0.70, 0.92), (0.75, 0.88))}
    naive = {**NAIVE, "per_seed": {**NAIVE["per_seed"], "diagonal": diag((0.80, 0.85), (0.70, 0.87), (0.75, 0.82))}}
    short = {**REPLAY, "per_seed": {**REPLAY["per_seed"], "diagonal": diag((0.82,), (0.71,), (0.74,))}}  # b not reached
    md = TB.diagonal_differences_markdown([naive, short, ind])
    assert "minus `independent`'s, per experience, paired over 3 seed(s)" in md[0]
    rows = [line for line in md if line.startswith("| a ") or line.startswith("| b ")]
    _, lo, hi = M.paired_interval([0.85, 0.87, 0.82], [0.90, 0.92, 0.88])
    assert rows[0] == f"| a | +0.000 [+0.000, +0.000] | +0.007 [{M.interval([0.02, 0.01, -0.01])[1]:+.3f}, " \
                      f"{M.interval([0.02, 0.01, -0.01])[2]:+.3f}] |"
    assert rows[1] == f"| b | {(-0.05 - 0.05 - 0.06) / 3:+.3f} [{lo:+.3f}, {hi:+.3f}] | — |" and hi < 0
    assert TB.diagonal_differences_markdown([naive, short]) == []  # no baseline, no table


def test_summary_files(tmp_path):
    partial = agg("lwf", {"0": 0.5}, complete=False)
    TB.write_summary(tmp_path, [NAIVE, REPLAY, partial])
    with open(tmp_path / "summary.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert [r["strategy"] for r in got] == ["naive", "replay", "lwf", TB.MAJORITY]
    assert got[0]["samples"] == "600" and got[2]["complete"] == "False"
    md = (tmp_path / "summary.md").read_text()
    assert "mean over 3 seed(s) ± half the 95 % interval" in md
    assert "Difference to `naive`, paired over 3 seed(s)" in md and "| replay | +0.060 [" in md
    assert "Diagonal accuracy R[j][j] per experience" in md
    assert md.rstrip().endswith("Incomplete strategies (partial or missing results): lwf")
