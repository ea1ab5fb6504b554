"""Metrics against hand-computed matrices and an independent loop implementation."""
import math

import numpy as np
import pytest

from clsim import metrics as M

# ---------------------------------------------------------------- hand-computed 3x3
R3 = [
    [0.80, 0.30, 0.20],
    [0.60, 0.90, 0.40],
    [0.50, 0.70, 0.95],
]
Z3 = [0.10, 0.20, 0.30]
EXPECTED3 = {
    # (0.50 + 0.70 + 0.95) / 3 = 2.15 / 3
    "acc": 2.15 / 3,
    # ((0.50 - 0.80) + (0.70 - 0.90)) / 2 = (-0.30 - 0.20) / 2
    "bwt": -0.25,
    # ((R[0][1] - z1) + (R[1][2] - z2)) / 2 = ((0.30 - 0.20) + (0.40 - 0.30)) / 2
    "fwt": 0.10,
    # j=0: max(0.80, 0.60) - 0.50 = 0.30 ; j=1: max(0.90) - 0.70 = 0.20 ; mean = 0.25
    "forgetting": 0.25,
    # (0.80 + 0.90 + 0.95) / 3 = 2.65 / 3
    "learning_acc": 2.65 / 3,
    # (R[0][1] + R[1][2]) / 2 = (0.30 + 0.40) / 2
    "serving_acc": 0.35,
}

# ---------------------------------------------------------------- hand-computed 4x4
# Accuracy on exp 0 and 1 rises after they were learned, so forgetting != -bwt.
R4 = [
    [0.50, 0.10, 0.30, 0.25],
    [0.70, 0.80, 0.35, 0.35],
    [0.60, 0.90, 0.70, 0.40],
    [0.40, 0.85, 0.65, 0.60],
]
Z4 = [0.25, 0.20, 0.25, 0.30]
EXPECTED4 = {
    # (0.40 + 0.85 + 0.65 + 0.60) / 4 = 2.50 / 4
    "acc": 0.625,
    # ((0.40 - 0.50) + (0.85 - 0.80) + (0.65 - 0.70)) / 3 = (-0.10 + 0.05 - 0.05) / 3
    "bwt": -0.10 / 3,
    # ((0.10 - 0.20) + (0.35 - 0.25) + (0.40 - 0.30)) / 3 = (-0.10 + 0.10 + 0.10) / 3
    "fwt": 0.10 / 3,
    # j=0: max(0.50, 0.70, 0.60) - 0.40 = 0.30
    # j=1: max(0.80, 0.90) - 0.85 = 0.05
    # j=2: max(0.70) - 0.65 = 0.05           mean = 0.40 / 3
    "forgetting": 0.40 / 3,
    # (0.50 + 0.80 + 0.70 + 0.60) / 4 = 2.60 / 4
    "learning_acc": 0.65,
    # (0.10 + 0.35 + 0.40) / 3
    "serving_acc": 0.85 / 3,
}


@pytest.mark.parametrize("R, z, expected", [(R3, Z3, EXPECTED3), (R4, Z4, EXPECTED4)])
def test_hand_computed(R, z, expected):
    got = M.summarize(R, z)
    assert set(got) == {"acc", "bwt", "fwt", "forgetting", "learning_acc", "serving_acc"}
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
        assert isinstance(got[k], float)
    # the individual functions agree with summarize
    assert M.acc(R) == got["acc"]
    assert M.bwt(R) == got["bwt"]
    assert M.fwt(R, z) == got["fwt"]
    assert M.forgetting(R) == got["forgetting"]
    assert M.learning_acc(R) == got["learning_acc"]


def test_accepts_arrays_and_lists_alike():
    assert M.summarize(np.array(R4), np.array(Z4)) == M.summarize(R4, Z4)


def test_running_by_hand_and_last_equals_summary():
    run = M.running(R4, Z4)
    assert set(run) == set(M.NAMES)
    assert all(len(v) == 4 for v in run.values())
    # k=1: only R[0][0]
    assert run["acc"][0] == pytest.approx(0.50)
    assert run["learning_acc"][0] == pytest.approx(0.50)
    assert math.isnan(run["bwt"][0]) and math.isnan(run["fwt"][0]) and math.isnan(run["forgetting"][0])
    # k=2: sub-matrix [[0.5, 0.1], [0.7, 0.8]], z = [0.25, 0.2]
    assert run["acc"][1] == pytest.approx((0.70 + 0.80) / 2)
    assert run["bwt"][1] == pytest.approx(0.70 - 0.50)  # 0.2: positive backward transfer
    assert run["fwt"][1] == pytest.approx(0.10 - 0.20)  # -0.1
    assert run["forgetting"][1] == pytest.approx(0.50 - 0.70)  # -0.2 (improved, not forgotten)
    assert run["learning_acc"][1] == pytest.approx((0.50 + 0.80) / 2)
    final = M.summarize(R4, Z4)
    for k in M.NAMES:
        assert run[k][-1] == pytest.approx(final[k])


def test_single_experience():
    s = M.summarize([[0.7]], [0.4])
    assert s["acc"] == pytest.approx(0.7)
    assert s["learning_acc"] == pytest.approx(0.7)
    for k in ("bwt", "fwt", "forgetting"):
        assert math.isnan(s[k]), k
    run = M.running([[0.7]], [0.4])
    assert run["acc"] == [pytest.approx(0.7)]


def test_no_forgetting_gives_zero():
    # every column keeps the value it had when it was learned
    R = [
        [0.9, 0.2, 0.1],
        [0.9, 0.8, 0.3],
        [0.9, 0.8, 0.7],
    ]
    assert M.forgetting(R) == 0.0
    assert M.bwt(R) == 0.0
    assert M.fwt(R, [0.2, 0.2, 0.3]) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "R, z",
    [
        ([[0.1, 0.2]], [0.1, 0.2]),  # not square
        ([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]], [0, 0]),  # 3x2
        ([0.1, 0.2], [0.1, 0.2]),  # 1-D
        (np.zeros((0, 0)), []),  # empty
        ([[0.1, 0.2], [0.3, 0.4]], [0.1]),  # z too short
        ([[0.1, 0.2], [0.3, 0.4]], [[0.1, 0.2]]),  # z 2-D
    ],
)
def test_bad_shapes_raise(R, z):
    with pytest.raises(ValueError):
        M.summarize(R, z)
    with pytest.raises(ValueError):
        M.running(R, z)


def test_bad_matrix_raises_in_each_function():
    bad = [[0.1, 0.2]]
    for f in (M.acc, M.bwt, M.forgetting, M.learning_acc):
        with pytest.raises(ValueError):
            f(bad)
    with pytest.raises(ValueError):
        M.fwt(bad, [0.1, 0.2])


# ---------------------------------------------------------------- reference implementation

def ref_bwt(R):
    T = len(R)
    total = 0.0
    for j in range(T - 1):
        total += R[T - 1][j] - R[j][j]
    return total / (T - 1)


def ref_forgetting(R):
    T = len(R)
    total = 0.0
    for j in range(T - 1):
        best = R[j][j]
        for l in range(j, T - 1):
            if R[l][j] > best:
                best = R[l][j]
        total += best - R[T - 1][j]
    return total / (T - 1)


def ref_fwt(R, z):
    T = len(R)
    return sum(R[j - 1][j] - z[j] for j in range(1, T)) / (T - 1)


@pytest.mark.parametrize("seed", range(20))
def test_against_reference_loops(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(2, 9))
    R = rng.random((T, T)).tolist()
    z = rng.random(T).tolist()
    assert M.bwt(R) == pytest.approx(ref_bwt(R), abs=1e-12)
    assert M.forgetting(R) == pytest.approx(ref_forgetting(R), abs=1e-12)
    assert M.fwt(R, z) == pytest.approx(ref_fwt(R, z), abs=1e-12)
    # running() on every prefix agrees with the references too
    run = M.running(R, z)
    for k in range(2, T + 1):
        sub = [row[:k] for row in R[:k]]
        assert run["bwt"][k - 1] == pytest.approx(ref_bwt(sub), abs=1e-12)
        assert run["forgetting"][k - 1] == pytest.approx(ref_forgetting(sub), abs=1e-12)


# ----------------------------------------------------------------------------- confusion matrices
def test_accuracy_balanced_accuracy_and_majority_rate_by_hand():
    C = [[5, 1, 0],   # 6 negative: 5 right
         [1, 1, 0],   # 2 neutral: 1 right
         [0, 3, 1]]   # 4 positive: 1 right
    assert M.accuracy(C) == pytest.approx(7 / 12)
    assert M.balanced_accuracy(C) == pytest.approx((5 / 6 + 1 / 2 + 1 / 4) / 3)
    assert M.majority_rate(C) == pytest.approx(6 / 12)
    always_majority = [[6, 0, 0], [2, 0, 0], [4, 0, 0]]
    assert M.accuracy(always_majority) == M.majority_rate(always_majority) == 0.5
    assert M.balanced_accuracy(always_majority) == pytest.approx(1 / 3)  # chance, whatever the prior
    absent = [[3, 0, 0], [0, 0, 0], [1, 0, 1]]  # no neutral text: its recall is not averaged in
    assert M.balanced_accuracy(absent) == pytest.approx((1 + 0.5) / 2)
    assert math.isnan(M.accuracy(np.zeros((3, 3)))) and math.isnan(M.balanced_accuracy(np.zeros((3, 3))))


def test_serving_acc_is_the_superdiagonal():
    R = [[0.9, 0.3, 0.2], [0.5, 0.8, 0.4], [0.4, 0.6, 0.7]]
    assert M.serving_acc(R) == pytest.approx((0.3 + 0.4) / 2)
    assert math.isnan(M.serving_acc([[0.5]]))
    assert M.summarize(R, [0.1, 0.2, 0.3])["serving_acc"] == pytest.approx(0.35)


def test_interval_is_the_student_t_interval():
    mean, lo, hi = M.interval([0.5, 0.7, 0.6])
    # s = 0.1, n = 3, t(0.975, 2) = 4.302653
    assert mean == pytest.approx(0.6)
    assert hi - mean == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6) and mean - lo == pytest.approx(hi - mean)
    assert M.interval([0.4])[0] == 0.4 and math.isnan(M.interval([0.4])[1])
    assert M.interval([0.5, float("nan"), 0.7])[0] == pytest.approx(0.6)  # NaN left out


def test_paired_interval_cancels_what_seeds_share():
    a, b = [0.60, 0.70, 0.80], [0.55, 0.66, 0.74]  # b is a bit worse on every seed; seeds differ a lot
    mean, lo, hi = M.paired_interval(a, b)
    assert mean == pytest.approx(0.05) and lo > 0  # paired: the difference is supported
    _, lo_unpaired, _ = M.interval(np.array(a) - np.mean(b))
    assert lo_unpaired < 0  # unpaired, the spread between seeds hides it
    with pytest.raises(ValueError):
        M.paired_interval([0.1], [0.1, 0.2])
