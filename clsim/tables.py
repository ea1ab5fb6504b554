"""The tables every summary shows — ``summary.csv`` / ``summary.md``, ``clsim compare`` and the
console read them from here.

- :data:`COLUMNS`: one row per strategy (mean over seeds, with a 95 % interval when there are
  several), plus a reference row: the majority class (each test set's most common label).
- :func:`differences`: each strategy minus a baseline, paired over the same seeds: naive, and
  ``independent`` when the run has it (the pretrained model fine-tuned on each experience alone:
  transfer measured against it).
- :func:`margins`: per experience, each strategy's diagonal accuracy against that test set's
  majority-class rate — the first thing to check under label-prior drift.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from clsim import metrics as M
from clsim.results import final_metric
from clsim.sinks import atomic_write_text, write_csv

MAJORITY = "majority class"  # the reference row's name
DETECTOR_KEYS = ("alarms", "false_alarms", "missed_drifts", "delay_steps")  # online columns shown with a detector


@dataclass(frozen=True)
class Column:
    key: str  # header in summary.csv / comparison.csv
    title: str  # header in the console's table
    get: Callable[[Mapping[str, Any]], Any]
    kind: str  # how a value prints: text, metric, seconds, count, bytes, flag


def _cost(key: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda doc: (doc.get("costs") or {}).get(key)


def _metric(key: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda doc: final_metric(doc, key)


SHOWN = ("acc", "bal_acc", "bwt", "forgetting", "fwt", "learning_acc", "bal_learning_acc", "serving_acc")
COLUMNS: tuple[Column, ...] = (
    Column("strategy", "strategy", lambda d: d["strategy"], "text"),
    *(Column(m, m.replace("learning_acc", "learn").replace("serving_acc", "serving"), _metric(m), "metric")
      for m in SHOWN),
    Column("train_s", "train s", _cost("train_seconds"), "seconds"),
    Column("eval_s", "eval s", _cost("eval_seconds"), "seconds"),
    Column("samples", "samples", _cost("samples_trained"), "count"),
    Column("trainable_params", "trainable", _cost("trainable_params"), "count"),
    Column("bytes_up", "bytes up", _metric("bytes_up"), "bytes"),
    Column("bytes_down", "bytes down", _metric("bytes_down"), "bytes"),
    Column("complete", "complete", lambda d: bool(d.get("complete")), "flag"),
)


# the online protocol's table (clsim.online): accuracy on each arrival before learning from it, against
# what learning from the stream cost, and how the detector did against the known drift points
ONLINE_COLUMNS: tuple[Column, ...] = (
    Column("strategy", "strategy", lambda d: d["strategy"], "text"),
    Column("online_acc", "online acc", _metric("online_acc"), "metric"),
    Column("online_bal_acc", "online bal", _metric("online_bal_acc"), "metric"),
    Column("acc", "final acc", _metric("acc"), "metric"),
    Column("bal_acc", "final bal", _metric("bal_acc"), "metric"),
    Column("online_train_s", "train s", _metric("online_train_seconds"), "seconds"),
    Column("samples", "samples", _metric("online_samples"), "count"),
    Column("updates", "updates", _metric("updates"), "count"),
    Column("labels", "labels read", _metric("labels_consumed"), "count"),
    Column("alarms", "alarms", _metric("alarms"), "decimal"),
    Column("false_alarms", "false", _metric("false_alarms"), "decimal"),
    Column("missed_drifts", "missed", _metric("missed_drifts"), "decimal"),
    Column("delay_steps", "delay (steps)", _metric("mean_delay_steps"), "decimal"),
    Column("serve_ms", "serve ms/text", _cost("serve_ms_per_arrival"), "decimal"),
    Column("complete", "complete", lambda d: bool(d.get("complete")), "flag"),
)

CONSOLE = ("strategy", "acc", "bal_acc", "forgetting", "learning_acc", "bal_learning_acc", "serving_acc", "train_s",
           "samples", "bytes_up", "complete", "online_acc", "online_bal_acc", "online_train_s", "updates", "labels",
           "alarms")  # the console's narrower view of the same table


ONLINE_NOTE = ("Online protocol: `online_acc` / `online_bal_acc` = accuracy / balanced accuracy of the model in "
               "service on each arriving batch before it learns from it, mean over time steps; `acc` / `bal_acc` = R "
               "after the last topic; `online_train_s`, `samples`, `updates`, `labels` = what learning from the "
               "stream cost (the deployment fit excluded); `alarms` … `delay_steps` = the detector against the known "
               "drift points; `serve_ms` = serving cost per arriving text (batched, no gradients).")


def is_online(docs: Sequence[Mapping[str, Any]]) -> bool:
    return any(d.get("protocol") == "online" for d in docs)


@dataclass(frozen=True)
class Cell:
    """A value and, for a mean over seeds, its 95 % interval (None: one seed, or not a metric)."""

    value: Any
    interval: tuple[float, float] | None = None


def majority_row(docs: Sequence[Mapping[str, Any]]) -> dict | None:
    """The reference a strategy must beat under label-prior drift: always predicting each test
    set's most common label. Its accuracy on experience j is that set's majority rate; its
    balanced accuracy is chance (1 / number of labels); it never changes, so nothing is forgotten."""
    doc = next((d for d in docs if d.get("majority")), None)
    if doc is None:
        return None
    maj = [float(v) for v in doc["majority"]]
    chance = 1.0 / len(doc["labels"]) if doc.get("labels") else math.nan
    online = [d["online_majority"] for d in docs if d.get("online_majority") is not None]
    return {"strategy": MAJORITY, "acc": float(np.mean(maj)), "learning_acc": float(np.mean(maj)),
            "serving_acc": float(np.mean(maj[1:])) if len(maj) > 1 else math.nan, "bal_acc": chance,
            "bal_learning_acc": chance, "bwt": 0.0, "forgetting": 0.0, "fwt": math.nan, "complete": True,
            "costs": {}, **({"online_acc": float(np.mean(online)), "online_bal_acc": chance} if online else {})}


def table(docs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None,
          reference: bool = True) -> tuple[list[Column], list[list[Cell]]]:
    """The summary table of ``docs``: byte columns only when a run is federated, ``complete``
    only when a run is not; the majority-class row last. ``labels`` replace strategy names."""
    ref = majority_row(docs) if reference else None
    rows_docs = list(docs) + ([ref] if ref else [])
    fed = any(final_metric(d, "bytes_up") is not None for d in docs)
    partial = not all(d.get("complete") for d in docs)
    detector = any(final_metric(d, "alarms") is not None for d in docs)
    cols = [c for c in (ONLINE_COLUMNS if is_online(docs) else COLUMNS) if (fed or c.kind != "bytes")
            and (partial or c.kind != "flag") and (detector or c.key not in DETECTOR_KEYS)]
    rows = []
    for k, d in enumerate(rows_docs):
        row = [Cell(c.get(d), _interval(d, c)) for c in cols]
        if labels and k < len(labels):
            row[0] = Cell(labels[k])
        rows.append(row)
    return cols, rows


def _interval(doc: Mapping[str, Any], col: Column) -> tuple[float, float] | None:
    lo_hi = (doc.get("intervals") or {}).get(col.key) if col.kind == "metric" else None
    return tuple(lo_hi) if lo_hi and all(v is not None and math.isfinite(v) for v in lo_hi) else None


def fmt(value: Any, kind: str, interval: tuple[float, float] | None = None) -> str:
    """One cell: 3 decimals (signed when negative; ``± half-width`` of an interval), seconds to
    0.1, counts with separators, bytes with units, "—" for none."""
    if isinstance(value, Cell):
        value, interval = value.value, value.interval
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "flag":
        return "yes" if value else "no"
    if kind == "bytes":
        return _bytes(float(value))
    if kind == "count":
        return f"{int(round(value)):,}"
    if kind in ("seconds", "decimal"):
        return f"{float(value):.1f}"
    if kind == "metric":
        text = f"{value:+.3f}" if value < 0 else f"{value:.3f}"
        return text + (f" ± {(interval[1] - interval[0]) / 2:.3f}" if interval else "")
    return str(value).replace("|", "\\|")


def _bytes(v: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(v) < 1000 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000.0
    return f"{v:.1f} GB"


def markdown(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def csv_rows(cols: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> tuple[list[str], list[list]]:
    """Full precision for CSV; a metric with intervals gets ``<key>_lo`` / ``<key>_hi`` columns."""
    with_iv = [any(r[k].interval for r in rows) for k in range(len(cols))]
    header, body = [], [[] for _ in rows]
    for k, c in enumerate(cols):
        header += [c.key] + ([f"{c.key}_lo", f"{c.key}_hi"] if with_iv[k] else [])
        for out, r in zip(body, rows):
            out.append(r[k].value)
            if with_iv[k]:
                out += list(r[k].interval) if r[k].interval else [None, None]
    return header, body


# --------------------------------------------------------------------------- paired differences
DIFFERENCES = ("acc", "bal_acc", "forgetting", "learning_acc", "bal_learning_acc", "serving_acc")
ONLINE_DIFFERENCES = ("online_acc", "online_bal_acc", "acc", "bal_acc", "online_samples", "online_train_seconds")


def signed(mean: float, lo: float = math.nan, hi: float = math.nan) -> str:
    """``+0.012 [+0.004, +0.019]``: a difference or margin with its 95 % interval (none with one seed)."""
    return f"{mean:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if math.isfinite(lo) else "")


def differences(docs: Sequence[Mapping[str, Any]], baseline: str = "naive",
                metrics: Sequence[str] = DIFFERENCES) -> list[tuple[str, dict]]:
    """Each strategy minus ``baseline`` per metric, paired over the seeds both finished: (mean,
    lo, hi, n). Empty without the baseline."""
    base = next((d for d in docs if d["strategy"] == baseline), None)
    if base is None:
        return []
    out = []
    for d in docs:
        if d is base:
            continue
        row = {}
        for m in metrics:
            a, b = (d.get("per_seed") or {}).get(m, {}), (base.get("per_seed") or {}).get(m, {})
            common = sorted(set(a) & set(b))
            if common:
                mean, lo, hi = M.paired_interval([a[s] for s in common], [b[s] for s in common])
                row[m] = (mean, lo, hi, len(common))
        out.append((d["strategy"], row))
    return out


def differences_markdown(docs: Sequence[Mapping[str, Any]], baseline: str | None = None) -> list[str]:
    """Paired differences to ``baseline`` (default: ``frozen`` for online runs, else ``naive``)."""
    online = is_online(docs)
    baseline = baseline or ("frozen" if online else "naive")
    metrics = ONLINE_DIFFERENCES if online else DIFFERENCES
    rows = differences(docs, baseline, metrics)
    if not rows:
        return []

    def cell(v) -> str:
        return "—" if v is None else signed(*v[:3])

    n = max((v[3] for _, r in rows for v in r.values()), default=0)
    return [f"Difference to `{baseline}`, paired over {n} seed(s) (mean [95 % interval]; an interval that "
            "excludes 0 is a difference the seeds support):", "",
            *markdown(["strategy", *metrics], [[name, *(cell(r.get(m)) for m in metrics)] for name, r in rows])]


def online_margins_markdown(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Online runs: each strategy's served accuracy minus always predicting the stream's most common
    label (``online_majority``), and its balanced accuracy minus chance (1 / labels), paired per seed."""
    if not is_online(docs):
        return []
    rows, n = [], 0
    for d in docs:
        seeds = d.get("per_seed") or {}
        acc, maj, bal = (seeds.get(k, {}) for k in ("online_acc", "online_majority", "online_bal_acc"))
        common = sorted(set(acc) & set(maj))
        if not common:
            continue
        chance = 1.0 / len(d.get("labels") or [0, 0, 0])
        cells = [M.paired_interval([acc[s] for s in common], [maj[s] for s in common]),
                 M.paired_interval([bal[s] for s in common], [chance] * len(common))]
        n = max(n, len(common))
        rows.append([d["strategy"], *(signed(*c) for c in cells)])
    if not rows:
        return []
    return [f"Margin over the trivial baselines, paired over {n} seed(s) (mean [95 % interval]): online_acc − the "
            "majority class's online accuracy; online_bal_acc − chance:", "",
            *markdown(["strategy", "online_acc − majority", "online_bal_acc − chance"], rows)]


def diagonal_differences_markdown(docs: Sequence[Mapping[str, Any]], baseline: str = "independent") -> list[str]:
    """Per experience: each strategy's diagonal R[j][j] minus ``baseline``'s, paired over the seeds
    both finished. Against ``independent`` (each experience learned from the pretrained model alone)
    it is the transfer to that one topic from having learned the earlier ones — which the averaged
    columns mix over topics. Empty without the baseline or its per-seed diagonals."""
    base = next((d for d in docs if d["strategy"] == baseline), None)
    b = ((base or {}).get("per_seed") or {}).get("diagonal")
    if not b:
        return []
    others = [d for d in docs if d is not base and d.get("experiences") == base["experiences"]]
    rows, n = [], 0
    for j, name in enumerate(base["experiences"]):
        cells = [name]
        for d in others:
            a = (d.get("per_seed") or {}).get("diagonal") or {}
            common = sorted(k for k in set(a) & set(b) if j < min(len(a[k]), len(b[k])))
            if not common:
                cells.append("—")
                continue
            n = max(n, len(common))
            cells.append(signed(*M.paired_interval([a[k][j] for k in common], [b[k][j] for k in common])))
        rows.append(cells)
    if not others or not n:
        return []
    return [f"Diagonal R[j][j] minus `{baseline}`'s, per experience, paired over {n} seed(s) (mean [95 % interval]; "
            "an interval that excludes 0 is a difference the seeds support):", "",
            *markdown(["experience", *(d["strategy"] for d in others)], rows)]


# --------------------------------------------------------------------------- margins per experience
def margins_markdown(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per experience: its test set's majority-class rate, and each strategy's diagonal accuracy
    R[j][j] (mean over seeds) with its margin over that rate — and, over several seeds, the margin's
    95 % interval: whether a topic is learned beyond its constant predictor is a finding only if the
    interval excludes 0 (on a skewed topic one test tweet is a large share of the margin)."""
    ref = next((d for d in docs if d.get("majority")), None)
    if ref is None:
        return []
    names, maj = ref["experiences"], ref["majority"]
    shown = [d for d in docs if d.get("accuracy_matrix") and d.get("experiences") == names]  # rows are experiences
    rows = []
    for j, name in enumerate(names):
        cells = [name, f"{maj[j]:.3f}"]
        for d in shown:
            R, iv = d["accuracy_matrix"], (d.get("intervals") or {}).get("diagonal_margin") or []
            own = (d.get("majority") or maj)[j]  # its own test sets' rate: the same as the interval's
            cells.append(f"{R[j][j]:.3f} ({signed(R[j][j] - own, *(iv[j] if j < len(iv) else ()))})"
                         if j < len(R) else "—")
        rows.append(cells)
    return ["Diagonal accuracy R[j][j] per experience (margin over its majority-class rate; over several seeds "
            "its 95 % interval — one that excludes 0 is a margin the seeds support):", "",
            *markdown(["experience", "majority", *(d["strategy"] for d in shown)], rows)]


def tables_after(docs: Sequence[Mapping[str, Any]], baselines: Sequence[str] = ()) -> list[str]:
    """The tables under the main one, in summaries and comparisons alike: paired differences to the
    default baseline, to ``independent`` and to ``baselines``; margins; per-topic transfer."""
    lines: list[str] = []
    for block in (differences_markdown(docs), differences_markdown(docs, "independent"),
                  *(differences_markdown(docs, b) for b in baselines), online_margins_markdown(docs),
                  margins_markdown(docs), diagonal_differences_markdown(docs)):
        if block:
            lines += ["", *block]
    return lines


# --------------------------------------------------------------------------- summary files
def write_summary(run_dir: str | os.PathLike, docs: Sequence[Mapping[str, Any]]) -> Path:
    """``summary.csv`` (full precision) and ``summary.md``: the table, the paired differences to
    naive, the per-experience margins, and a note naming every strategy not finished."""
    d = Path(run_dir)
    cols, rows = table(docs)
    write_csv(d / "summary.csv", *csv_rows(cols, rows))
    seeds = max((len(doc.get("seeds") or []) for doc in docs), default=1)
    lines = [f"Accuracy in [0, 1]; `bal_` = balanced accuracy; mean over {seeds} seed(s)"
             + (" ± half the 95 % interval" if seeds > 1 else "") + ".", "",
             *([ONLINE_NOTE, ""] if is_online(docs) else []),
             *markdown([c.key for c in cols], [[fmt(v, c.kind) for v, c in zip(r, cols)] for r in rows])]
    lines += tables_after(docs)
    incomplete = [doc["strategy"] for doc in docs if not doc.get("complete")]
    if incomplete:
        lines += ["", f"Incomplete strategies (partial or missing results): {', '.join(incomplete)}"]
    atomic_write_text(d / "summary.md", "\n".join(lines) + "\n")
    return d
