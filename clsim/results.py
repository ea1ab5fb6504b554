"""What a run leaves behind and how it is read: the run folder, the metrics document of each
strategy, the one table of columns every summary shows, and the accuracy-matrix heatmap.

A run folder ``<output>/<scenario>/<run id>/`` holds ``plan.json`` (the resolved plan: what
``clsim run --resume`` continues), ``scenario.yaml`` (the same scenario for people), one folder
per strategy (``metrics.json``, ``accuracy_matrix.csv``, TensorBoard events, ``checkpoint.pt``)
and ``summary.csv`` / ``summary.md``. ``summary.*``, ``clsim compare`` and the CLI's table all
read :data:`COLUMNS`; the TensorBoard image and ``clsim compare``'s figure both draw R with
:func:`draw_matrix`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from clsim import metrics as M
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
    """The resolved plan (what a resume continues) and the scenario for people: written once, first."""
    atomic_write_text(run_dir / "scenario.yaml", yaml.safe_dump(scenario_to_dict(plan.scenario), sort_keys=False))
    atomic_write_text(run_dir / PLAN_FILE, plan.to_json())


def read_plan(run_dir: Path, extensions: tuple[Extension, ...] = ()) -> Plan:
    """The plan a run folder was started with; nothing is resolved again."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(None, "--resume", f"no run folder {run_dir}")
    if not (run_dir / PLAN_FILE).is_file():
        raise ConfigError(None, "--resume", f"{run_dir} is not a clsim run folder (expected {PLAN_FILE}, "
                                            "written when a run starts)")
    return Plan.from_json((run_dir / PLAN_FILE).read_text(encoding="utf-8"), extensions, run_dir / PLAN_FILE)


def partial_doc(run_dir: Path, name: str, error: str | None = None) -> dict:
    """A strategy's metrics.json as far as it got (``complete`` false), or a stub if it has none."""
    try:
        doc = json.loads((Path(run_dir) / name / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = {"strategy": name, "accuracy_matrix": [], "complete": False, "costs": {}}
    if error:
        doc["error"] = error
    return doc


def finished_docs(run_dir: Path, names: list[str]) -> dict[str, dict]:
    """Strategies of a run folder whose metrics.json is complete (written after their last TensorBoard entry)."""
    out = {}
    for name in names:
        doc = partial_doc(run_dir, name)
        if doc.get("complete"):
            out[name] = doc
    return out


# --------------------------------------------------------------------------- documents
def document(name: str, names: list[str], z: list[float], R: list[list[float]], costs: dict, hparams: dict,
             extra: dict | None = None) -> dict:
    """The metrics.json document: every number is a function of R, z and the costs."""
    out = {"strategy": name, "experiences": names, "zero_shot": z, "accuracy_matrix": R,
           "complete": len(R) == len(names), "costs": costs, "hparams": hparams}
    if R:
        sub = [row[: len(R)] for row in R]
        out.update(M.summarize(sub, z[: len(R)]))
        out["running"] = M.running(sub, z[: len(R)])
    out.update(extra or {})
    return out


def write_strategy_results(dir: str | os.PathLike, doc: Mapping[str, Any]) -> Path:
    """``metrics.json`` (everything) and ``accuracy_matrix.csv`` (zero-shot row first, then one
    row per trained experience) into ``dir``; returns ``dir``."""
    d = Path(dir)
    names = list(doc["experiences"])
    rows = [["zero_shot", *doc["zero_shot"]]]
    for i, r in enumerate(doc["accuracy_matrix"]):
        if len(r) != len(names):
            raise ValueError(f"{len(r)} values for {len(names)} experience names")
        rows.append([names[i], *r])
    write_json(d / "metrics.json", doc)
    write_csv(d / "accuracy_matrix.csv", ["trained_on", *names], rows)
    return d


def final_metric(doc: Mapping[str, Any], name: str) -> float | None:
    """A document's final value of ``name`` (top level or under ``costs``); per-round lists
    (e.g. ``bytes_up``) are summed; None when absent or not finite."""
    v = doc.get(name, (doc.get("costs") or {}).get(name))
    if isinstance(v, Mapping):
        v = v.get("total")
    if isinstance(v, (list, tuple)):
        flat = np.asarray(v, dtype=float).ravel()
        v = float(np.nansum(flat)) if flat.size else None
    return float(v) if v is not None and math.isfinite(float(v)) else None


# --------------------------------------------------------------------------- the column table
@dataclass(frozen=True)
class Column:
    key: str  # header in summary.csv / comparison.csv
    title: str  # header in the console's table
    get: Callable[[Mapping[str, Any]], Any]
    kind: str  # how a value prints: text, metric, seconds, count, bytes, flag


def _cost(key: str) -> Callable[[Mapping[str, Any]], Any]:
    return lambda doc: (doc.get("costs") or {}).get(key)


COLUMNS: tuple[Column, ...] = (
    Column("strategy", "strategy", lambda d: d["strategy"], "text"),
    *(Column(m, m, (lambda m: lambda d: final_metric(d, m))(m), "metric") for m in M.NAMES),
    Column("train_s", "train s", _cost("train_seconds"), "seconds"),
    Column("eval_s", "eval s", _cost("eval_seconds"), "seconds"),
    Column("samples", "samples", _cost("samples_trained"), "count"),
    Column("trainable_params", "trainable", _cost("trainable_params"), "count"),
    Column("bytes_up", "bytes up", lambda d: final_metric(d, "bytes_up"), "bytes"),
    Column("bytes_down", "bytes down", lambda d: final_metric(d, "bytes_down"), "bytes"),
    Column("complete", "complete", lambda d: bool(d.get("complete")), "flag"),
)


def table(docs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> tuple[list[Column], list[list]]:
    """The summary table of ``docs``: byte columns only when a run is federated, ``complete``
    only when a run is not. ``labels`` replace the strategy names (e.g. prefixed by run)."""
    fed = any(final_metric(d, "bytes_up") is not None for d in docs)
    partial = not all(d.get("complete") for d in docs)
    cols = [c for c in COLUMNS if (fed or c.kind != "bytes") and (partial or c.kind != "flag")]
    rows = [[c.get(d) for c in cols] for d in docs]
    for row, label in zip(rows, labels or ()):
        row[0] = label
    return cols, rows


def fmt(value: Any, kind: str) -> str:
    """One cell: 3 decimals (signed when negative), seconds to 0.1, counts with separators,
    bytes with units, "—" for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if kind == "flag":
        return "yes" if value else "no"
    if kind == "bytes":
        return _bytes(float(value))
    if kind == "count":
        return f"{int(value):,}"
    if kind == "seconds":
        return f"{float(value):.1f}"
    if kind == "metric":
        return f"{value:+.3f}" if value < 0 else f"{value:.3f}"
    return str(value).replace("|", "\\|")


def _bytes(v: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(v) < 1000 or unit == "GB":
            return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
        v /= 1000.0
    return f"{v:.1f} GB"


def markdown_table(cols: Sequence[Column], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(c.key for c in cols) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(cols) - 1)) + "|"]
    return lines + ["| " + " | ".join(fmt(v, c.kind) for v, c in zip(r, cols)) + " |" for r in rows]


def write_summary(run_dir: str | os.PathLike, docs: Sequence[Mapping[str, Any]]) -> Path:
    """``summary.csv`` (full precision) and ``summary.md`` (the table, and a note naming every
    strategy that has not finished) — one row per strategy, in plan order."""
    d = Path(run_dir)
    cols, rows = table(docs)
    write_csv(d / "summary.csv", [c.key for c in cols], rows)
    lines = markdown_table(cols, rows)
    incomplete = [doc["strategy"] for doc in docs if not doc.get("complete")]
    if incomplete:
        lines += ["", f"Incomplete strategies (partial or missing results): {', '.join(incomplete)}"]
    atomic_write_text(d / "summary.md", "\n".join(lines) + "\n")
    return d


# --------------------------------------------------------------------------- the heatmap
def figure(width: float, height: float, dpi: int = 110):
    """A matplotlib Figure on an Agg canvas (no pyplot, no global backend state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # here: matplotlib costs a second to import
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def draw_matrix(ax, R, names: Sequence[str], title: str, fontsize: float = 8):
    """R (rows: trained on, columns: tested on) as a heatmap on ``ax``, values written in the
    cells, colour-blind-safe ``cividis``; NaN cells stay blank. Returns the image (for a colorbar)."""
    a = np.asarray(R, dtype=float)
    if a.ndim != 2 or a.shape[1] != len(names) or a.shape[0] > len(names):
        raise ValueError(f"matrix of shape {a.shape} does not fit {len(names)} experience names")
    im = ax.imshow(np.ma.masked_invalid(a), cmap="cividis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names)), labels=list(names), rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(a.shape[0]), labels=list(names[: a.shape[0]]), fontsize=fontsize)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title(title, fontsize=fontsize + 2)
    for i in range(a.shape[0]):
        for j in range(len(names)):
            if math.isfinite(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=fontsize - 1,
                        color="black" if a[i, j] > 0.6 else "white")
    return im


def matrix_image(R, names: Sequence[str], title: str = "accuracy matrix") -> np.ndarray:
    """The heatmap of R as an HxWx3 uint8 array (TensorBoard's image)."""
    size = 2.0 + 0.7 * len(names)
    fig = figure(size + 1.0, size, dpi=100)
    ax = fig.add_subplot()
    fig.colorbar(draw_matrix(ax, R, names, title), ax=ax, fraction=0.046, pad=0.04)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


# --------------------------------------------------------------------------- TensorBoard's hparams view
# Final numbers the hparams dashboard shows for every strategy (``hparam/<name>`` scalars);
# bytes only where a (federated) run reports them.
HPARAM_METRICS = (*M.NAMES, "train_seconds", "bytes_up", "bytes_down", "bytes_total")


def write_hparams_experiment(run_dir: str | os.PathLike) -> Path | None:
    """Make TensorBoard's hparams dashboard list every strategy of a run folder.

    Reads ``<run_dir>/*/metrics.json``; writes one experiment summary at the run folder's root
    (TensorBoard uses the first it finds) whose columns are the union of all strategies'
    hyper-parameters and the :data:`HPARAM_METRICS` any of them reports; and, in each strategy
    folder, whatever the dashboard would otherwise miss: a session and the ``hparam/<metric>``
    scalars its value columns read. Returns the experiment's folder, or None without metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # here: seconds to import

    root = Path(run_dir)
    docs = {}
    for f in sorted(root.glob("*/metrics.json")):
        try:
            docs[f.parent] = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    if not docs:
        return None
    union: dict[str, list] = {}
    metrics: list[str] = []
    for d, doc in docs.items():
        hp = hparam_values({**(doc.get("hparams") or {}), "strategy": doc.get("strategy", d.name)})
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
