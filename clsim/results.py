"""What a run leaves behind: the run folder and the metrics documents.

A run folder ``<output>/<scenario>/<run id>/`` holds ``plan.json`` (the resolved plan: what
``clsim run --resume`` continues), ``scenario.yaml`` (the same scenario for people),
``splits.json`` (the corpus rows of every split, per seed), one folder per strategy with one
folder per seed (``seed_<k>/``: ``metrics.json``, the matrices as CSV, TensorBoard events,
``checkpoint.pt``) and the strategy's ``metrics.json`` over its seeds (:func:`aggregate`), and
``summary.csv`` / ``summary.md`` (``clsim.tables``).
"""
from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from clsim import metrics as M
from clsim import online_metrics as OM
from clsim.config import ConfigError, Extension, Plan, scenario_to_dict
from clsim.sinks import TensorBoardSink, atomic_write_text, hparam_values, hparams_summaries, write_csv, write_json

PLAN_FILE = "plan.json"


# --------------------------------------------------------------------------- the run folder
def new_run_dir(output: Path, scenario_name: str, run_id: str | None = None) -> Path:
    """A fresh ``<output>/<scenario>/<run id>/``; an existing non-empty one is refused, not overwritten."""
    if run_id is not None and (not run_id or run_id in (".", "..") or "/" in run_id or os.sep in run_id):
        raise ConfigError(None, "--run-id", f"expected a folder name without path separators, got {run_id!r}")
    run_id = run_id or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = Path(output) / scenario_name / run_id
    if path.is_dir() and any(path.iterdir()):
        raise ConfigError(None, "--run-id", f"{path} already holds a run; continue it with "
                                            f"`clsim run --resume {path}` or choose another --run-id")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. --output names a file, or a read-only place
        raise ConfigError(None, "--output", f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def write_plan(plan: Plan, run_dir: Path) -> None:
    """The resolved plan (what a resume continues) and the scenario for people: written once, first.
    The scenario file is named by its path from the run folder, so a committed or copied run folder
    names no machine's folders (:func:`read_plan` turns it back into an absolute path)."""
    atomic_write_text(run_dir / "scenario.yaml", yaml.safe_dump(scenario_to_dict(plan.scenario), sort_keys=False))
    data = json.loads(plan.to_json())
    try:
        data["file"] = os.path.relpath(Path(plan.file).resolve(), Path(run_dir).resolve())
    except ValueError:  # another drive (Windows): keep it absolute
        pass
    atomic_write_text(run_dir / PLAN_FILE, json.dumps(data, indent=1))


SPLITS_FILE = "splits.json"


def write_splits(run_dir: Path, records: dict[int, dict]) -> None:
    """Every split of every seed as corpus row ids (``clsim.data.split_record``), so anyone can
    audit which texts trained, validated and tested what."""
    write_json(Path(run_dir) / SPLITS_FILE, {"seeds": {str(seed): rec for seed, rec in records.items()}})


def read_plan(run_dir: Path, extensions: tuple[Extension, ...] = ()) -> Plan:
    """The plan a run folder was started with; nothing is resolved again."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(None, "--resume", f"no run folder {run_dir}")
    if not (run_dir / PLAN_FILE).is_file():
        raise ConfigError(None, "--resume", f"{run_dir} is not a clsim run folder (expected {PLAN_FILE}, "
                                            "written when a run starts)")
    plan = Plan.from_json((run_dir / PLAN_FILE).read_text(encoding="utf-8"), extensions, run_dir / PLAN_FILE)
    if not plan.file.is_absolute():  # written from the run folder (write_plan)
        plan = plan.model_copy(update={"file": (run_dir / plan.file).resolve()})
    return plan


def seed_dir(run_dir: Path, name: str, seed: int) -> Path:
    """Where one (strategy, seed) run writes: its metrics, TensorBoard events (a TensorBoard run
    named ``<strategy>/seed_<k>``) and checkpoint."""
    return Path(run_dir) / name / f"seed_{seed}"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def partial_doc(run_dir: Path, name: str, seeds: list[int], error: str | None = None) -> dict:
    """A strategy's results over ``seeds`` as far as they got: the seed documents found,
    aggregated (``complete`` only when every seed finished), or a stub if there are none."""
    docs = [d for d in (_read(seed_dir(run_dir, name, s) / "metrics.json") for s in seeds) if d]
    doc = aggregate(docs, seeds) if docs else {"strategy": name, "accuracy_matrix": [], "complete": False,
                                               "costs": {}, "seeds": list(seeds)}
    if error:
        doc["error"] = error
    return doc


def finished_seeds(run_dir: Path, name: str, seeds: list[int]) -> dict[int, dict]:
    """The seed runs of a strategy whose metrics.json is complete (written after their last
    TensorBoard entry): a resume keeps them."""
    out = {}
    for s in seeds:
        doc = _read(seed_dir(run_dir, name, s) / "metrics.json")
        if doc and doc.get("complete"):
            out[s] = doc
    return out


# --------------------------------------------------------------------------- documents
def _rows(confusions, fn) -> list:
    return [fn(c) for c in confusions]


def document(name: str, names: list[str], labels: list[str], z_conf: list, C: list[list], costs: dict,
             hparams: dict, extra: dict | None = None) -> dict:
    """One (strategy, seed) run's metrics.json. Every number is a function of the recorded
    confusion matrices (``confusion``: the zero-shot row and one row per trained experience) and
    the costs: accuracy and balanced-accuracy matrices, each test set's majority-class rate,
    and every metric of both matrices (balanced ones prefixed ``bal_``)."""
    z, zb = _rows(z_conf, M.accuracy), _rows(z_conf, M.balanced_accuracy)
    R = [_rows(row, M.accuracy) for row in C]
    B = [_rows(row, M.balanced_accuracy) for row in C]
    out = {"strategy": name, "seed": hparams.get("seed"), "experiences": names, "labels": labels,
           "zero_shot": z, "accuracy_matrix": R, "balanced_zero_shot": zb, "balanced_accuracy_matrix": B,
           "majority": _rows(z_conf, M.majority_rate), "complete": len(R) == len(names), "costs": costs,
           "hparams": hparams,
           "confusion": {"zero_shot": [np.asarray(c).tolist() for c in z_conf],
                         "rows": [[np.asarray(c).tolist() for c in row] for row in C]}}
    if R:
        k = len(R)
        for prefix, mat, zero in (("", R, z), ("bal_", B, zb)):
            sub = [row[:k] for row in mat]
            out.update({prefix + m: v for m, v in M.summarize(sub, zero[:k]).items()})
            out[prefix + "running"] = M.running(sub, zero[:k])
    out.update(extra or {})
    return out


def _nanmean(arrays) -> list:
    """Element-wise mean over runs, ignoring NaN (JSON null) entries; all-NaN stays NaN."""
    a = np.asarray(arrays, dtype=float)
    with np.errstate(invalid="ignore"):
        counts = np.sum(np.isfinite(a), axis=0)
        mean = np.where(counts > 0, np.nansum(a, axis=0) / np.maximum(counts, 1), np.nan)
    return mean.tolist()


def _mean(values: list) -> float | int:
    """A cost averaged over seeds; counts that agree stay integers."""
    mean = float(np.mean(values))
    return int(mean) if all(isinstance(v, int) for v in values) and mean.is_integer() else mean


METRICS = (*M.NAMES, *(f"bal_{m}" for m in M.NAMES))  # every metric a document reports


def aggregate(docs: list[dict], seeds: list[int]) -> dict:
    """A strategy over its seeds (``<run>/<strategy>/metrics.json``): per metric the mean, a 95 %
    t interval and the value of every seed; mean matrices, majority rates and costs. ``complete``
    when every seed in ``seeds`` finished. A seed still running contributes nothing."""
    done = [d for d in docs if d.get("complete")] or docs
    first = done[0]
    out: dict[str, Any] = {"strategy": first["strategy"], "seeds": list(seeds),
                           "seeds_done": sorted(d.get("seed") for d in docs if d.get("complete")),
                           "complete": len([d for d in docs if d.get("complete")]) == len(seeds),
                           "experiences": first["experiences"], "labels": first.get("labels"),
                           "hparams": {k: v for k, v in (first.get("hparams") or {}).items() if k != "seed"},
                           "intervals": {}, "per_seed": {}}
    for key in ("zero_shot", "accuracy_matrix", "balanced_zero_shot", "balanced_accuracy_matrix", "majority"):
        mats = [np.asarray(d[key], dtype=float) for d in done if key in d and d[key]]
        if mats and all(m.shape == mats[0].shape for m in mats):
            out[key] = _nanmean(mats)
    square = [d for d in done if d.get("accuracy_matrix") and len(d["accuracy_matrix"]) == len(d.get("majority") or ())]
    if square:  # every trained experience's R[j][j] per seed, and its margin over the majority rate
        diagonals = np.asarray([np.diag(np.asarray(d["accuracy_matrix"], dtype=float)) for d in square])
        out["per_seed"]["diagonal"] = {str(d.get("seed")): row.tolist() for d, row in zip(square, diagonals)}
        margins = diagonals - np.asarray([d["majority"] for d in square], dtype=float)
        out["intervals"]["diagonal_margin"] = [list(M.interval(col)[1:]) for col in margins.T]
    for m in (*METRICS, *OM.ONLINE_METRICS):  # online ones only where the protocol was online
        values = {str(d.get("seed")): d.get(m) for d in done if d.get(m) is not None}
        if values:
            mean, lo, hi = M.interval(list(values.values()))
            out[m], out["intervals"][m], out["per_seed"][m] = mean, [lo, hi], values
    for prefix in ("", "bal_"):
        runs = [d[prefix + "running"] for d in done if prefix + "running" in d]
        if runs and all(len(r["acc"]) == len(runs[0]["acc"]) for r in runs):
            out[prefix + "running"] = {m: _nanmean([r[m] for r in runs]) for m in runs[0]}
            acc = np.asarray([r["acc"] for r in runs], dtype=float)
            steps = [M.interval(acc[:, t]) for t in range(acc.shape[1])]
            out[prefix + "running_intervals"] = {"acc": [[s[1] for s in steps], [s[2] for s in steps]]}
    if any(d.get("protocol") == "online" for d in done):  # accuracy over time, over seeds
        out["protocol"], out["online_curve"] = "online", OM.curve(done)
    costs = [d.get("costs") or {} for d in done]
    out["costs"] = {k: _mean([c[k] for c in costs]) for k in costs[0]
                    if all(isinstance(c.get(k), (int, float)) for c in costs)}
    for key in ("bytes_up", "bytes_down"):  # federated: totals per seed, averaged
        totals = [final_metric(d, key) for d in done if key in d]
        if totals:
            out[key] = float(np.mean(totals))
    return out


def write_strategy_results(dir: str | os.PathLike, doc: Mapping[str, Any]) -> Path:
    """``metrics.json`` (everything), ``accuracy_matrix.csv`` and ``balanced_accuracy_matrix.csv``
    (zero-shot row first, then one row per trained experience) into ``dir``; returns ``dir``."""
    d = Path(dir)
    names = list(doc["experiences"])
    for key, zero, file in (("accuracy_matrix", "zero_shot", "accuracy_matrix.csv"),
                            ("balanced_accuracy_matrix", "balanced_zero_shot", "balanced_accuracy_matrix.csv")):
        if key not in doc:
            continue
        rows = [["zero_shot", *doc[zero]]]
        for i, r in enumerate(doc[key]):
            if len(r) != len(names):
                raise ValueError(f"{len(r)} values for {len(names)} experience names")
            rows.append([names[i], *r])
        write_csv(d / file, ["trained_on", *names], rows)
    write_json(d / "metrics.json", doc)
    return d


def final_metric(doc: Mapping[str, Any], name: str) -> float | None:
    """A document's final value of ``name`` (top level or under ``costs``; an aggregate's mean);
    per-round lists (e.g. ``bytes_up``) are summed; None when absent or not finite."""
    v = doc.get(name, (doc.get("costs") or {}).get(name))
    if isinstance(v, Mapping):
        v = v.get("total")
    if isinstance(v, (list, tuple)):
        flat = np.asarray(v, dtype=float).ravel()
        v = float(np.nansum(flat)) if flat.size else None
    return float(v) if v is not None and math.isfinite(float(v)) else None


# --------------------------------------------------------------------------- TensorBoard's hparams view
# Final numbers the hparams dashboard shows for every strategy (``hparam/<name>`` scalars);
# bytes only where a (federated) run reports them.
HPARAM_METRICS = (*M.NAMES, "train_seconds", "bytes_up", "bytes_down", "bytes_total")


def write_hparams_experiment(run_dir: str | os.PathLike) -> Path | None:
    """Make TensorBoard's hparams dashboard list every strategy of a run folder.

    Reads ``<run_dir>/<strategy>/seed_<k>/metrics.json``; writes one experiment summary at the run folder's root
    (TensorBoard uses the first it finds) whose columns are the union of all strategies'
    hyper-parameters and the :data:`HPARAM_METRICS` any of them reports; and, in each strategy
    folder, whatever the dashboard would otherwise miss: a session and the ``hparam/<metric>``
    scalars its value columns read. Returns the experiment's folder, or None without metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # here: seconds to import

    root = Path(run_dir)
    docs = {}
    for f in sorted(root.glob("*/seed_*/metrics.json")):
        try:
            docs[f.parent] = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    if not docs:
        return None
    union: dict[str, list] = {}
    metrics: list[str] = []
    for d, doc in docs.items():
        hp = hparam_values({**(doc.get("hparams") or {}), "strategy": doc.get("strategy", d.parent.name)})
        finals = {m: final_metric(doc, m) for m in HPARAM_METRICS}
        metrics += [m for m, v in finals.items() if v is not None and m not in metrics]
        for k, v in hp.items():
            union.setdefault(k, []).append(v)
        ea = EventAccumulator(str(d), size_guidance={"scalars": 0, "tensors": 0})
        ea.Reload()
        try:
            has_session = "_hparams_/session_start_info" in ea.PluginTagToContent("hparams")
        except KeyError:  # no hparams data at all in this folder
            has_session = False
        logged = set(ea.Tags().get("scalars", []))
        missing = {f"hparam/{m}": v for m, v in finals.items() if v is not None and f"hparam/{m}" not in logged}
        if missing or not has_session:
            with TensorBoardSink(d) as tb:
                if not has_session:
                    _, ssi, sei = hparams_summaries(hp, [f"hparam/{m}" for m in finals])
                    tb.add_summaries(ssi, sei)
                for t, v in missing.items():
                    tb.log_scalar(t, v, 0)
    rep, domains = {}, {}  # one representative value per column: a string if any session's value is one
    for k, vals in union.items():
        if any(isinstance(v, str) for v in vals):
            rep[k], domains[k] = str(vals[0]), sorted({str(v) for v in vals})
        else:
            rep[k] = vals[0]
    exp, _, _ = hparams_summaries(rep, [f"hparam/{m}" for m in metrics], domains)
    for old in root.glob("events.out.tfevents.*"):  # TensorBoard keeps the first experiment it reads
        old.unlink()
    with TensorBoardSink(root) as tb:
        tb.add_summaries(exp)
    return root
