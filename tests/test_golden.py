"""Behaviour pinned: a fresh `clsim run` of the smoke scenarios (seed 0) equals the metrics.json
files saved in ``tests/golden/`` apart from timings. Each run is made once per session
(``cli_run`` in conftest); test_cli checks the outputs of the same smoke run.

Accuracy matrices and zero-shot rows are compared exactly (they are counts over small test
sets); other floats (losses, regulariser ratios) within a relative tolerance, since CPUs with
different vector units round matrix products differently. Regenerate a golden file only for a
change that is meant to alter results, and say so in the commit.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
# wall-clock measurements and their by-products: never reproducible
TIMINGS = {"train_seconds", "eval_seconds", "wall_seconds", "train_wall_seconds", "slowest_client_train_seconds",
           "client_setup_seconds", "feature_seconds", "resumes", "restarts"}
EXACT = {"accuracy_matrix", "zero_shot", "accuracy"}


def compare(got, want, path: str = "", exact: bool = False) -> list[str]:
    """Differences between two documents (timings skipped), as readable paths."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: expected a mapping"]
        out = [f"{path}.{k}: missing" for k in want if k not in got and k not in TIMINGS]
        out += [f"{path}.{k}: unexpected" for k in got if k not in want and k not in TIMINGS]
        for k in want:
            if k in got and k not in TIMINGS:
                out += compare(got[k], want[k], f"{path}.{k}", exact or k in EXACT)
        return out
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: expected {len(want)} items, got {got!r:.80}"]
        return [d for k, (g, w) in enumerate(zip(got, want)) for d in compare(g, w, f"{path}[{k}]", exact)]
    if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
        if exact:
            return [] if got == want else [f"{path}: {got!r} != {want!r} (exact)"]
        return [] if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-6) else [f"{path}: {got!r} != {want!r}"]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


@pytest.mark.parametrize("scenario", ["smoke", "smoke_fed"])
def test_fresh_run_equals_golden_metrics(scenario, cli_run):
    run_dir, _ = cli_run(scenario)  # `clsim run scenarios/<scenario>.yaml --seed 0`, shared with test_cli
    want = {f.stem: json.loads(f.read_text()) for f in sorted((GOLDEN / scenario).glob("*.json"))}
    got = {f.parent.parent.name: json.loads(f.read_text()) for f in sorted(run_dir.glob("*/seed_0/metrics.json"))}
    assert sorted(got) == sorted(want)
    problems = [d for name in want for d in compare(got[name], want[name], name)]
    assert not problems, "\n".join(problems[:20])


def test_compare_sees_a_changed_accuracy_and_ignores_timings():
    doc = json.loads((GOLDEN / "smoke" / "naive.json").read_text())
    changed = json.loads(json.dumps(doc))
    changed["costs"]["train_seconds"] += 5.0
    assert compare(changed, doc) == []
    changed["accuracy_matrix"][0][0] += 1e-9
    assert compare(changed, doc) == ["naive.accuracy_matrix[0][0]: "
                                     f"{changed['accuracy_matrix'][0][0]!r} != {doc['accuracy_matrix'][0][0]!r} (exact)"
                                     .replace("naive.", ".")]
