"""Compare strategies from one or several run folders: a table, markdown, CSV and PNG plots.

Everything is read back from the ``metrics.json`` files ``clsim run`` writes (one per
strategy), so a comparison can mix runs, scenarios and the federated path. Plots use
matplotlib's object-oriented API on an Agg canvas (no global state) with the Okabe–Ito
colour-blind-safe palette plus distinct markers, and the ``cividis`` map for matrices.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clsim import online_metrics as OM
from clsim.config import ConfigError
from clsim.figures import draw_matrix, figure
from clsim.results import final_metric
from clsim.sinks import atomic_write_bytes, atomic_write_text, write_csv
from clsim.tables import (
    ONLINE_NOTE,
    csv_rows,
    fmt,
    is_online,
    table,
    tables_after,
)
from clsim.tables import markdown as markdown_rows

# Okabe & Ito (2008), most legible first; yellow last (weak on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

PLOTS = ("accuracy_per_experience.png", "average_accuracy.png", "accuracy_matrices.png",
         "balanced_accuracy_matrices.png", "cost_quality.png")


@dataclass
class Entry:
    """One strategy run: its label in the comparison, where it came from (``more``: other run
    folders whose seeds it merged), its metrics.json."""

    label: str
    path: Path
    doc: dict
    more: tuple[Path, ...] = ()

    @property
    def names(self) -> list[str]:
        return list(self.doc["experiences"])

    @property
    def R(self) -> np.ndarray:
        return np.asarray(self.doc["accuracy_matrix"], dtype=float).reshape(-1, len(self.names))

    @property
    def zero_shot(self) -> np.ndarray:
        return np.asarray(self.doc["zero_shot"], dtype=float)

    def value(self, name: str) -> Any:
        """A final number of this run: a metric (``acc``…), a cost (``train_seconds``…) or bytes."""
        return final_metric(self.doc, name)

    @property
    def bytes_total(self) -> float | None:
        up, down = self.value("bytes_up"), self.value("bytes_down")
        return None if up is None and down is None else (up or 0.0) + (down or 0.0)


# --------------------------------------------------------------------------- reading
def metrics_files(path: Path) -> list[Path]:
    """metrics.json files under a strategy folder, a run folder or a scenario folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, None, "not found; expected a run folder written by `clsim run`")
    if path.is_file():
        return [path]
    if (path / "metrics.json").is_file():
        return [path / "metrics.json"]
    runs = [path] if any(path.glob("*/metrics.json")) else sorted(
        d for d in path.iterdir() if d.is_dir() and any(d.glob("*/metrics.json")))
    if not runs:
        raise ConfigError(path, None, "no metrics.json under it; expected a run folder written by `clsim run`")
    return [f for run in runs for f in _in_run_order(run)]


def _in_run_order(run: Path) -> list[Path]:
    """A run folder's metrics files in the scenario's strategy order (as in its summary.csv)."""
    files = sorted(run.glob("*/metrics.json"))
    order: list[str] = []
    if (run / "summary.csv").is_file():
        with open(run / "summary.csv", encoding="utf-8", newline="") as f:
            order = [r.get("strategy", "") for r in csv.DictReader(f)]
    rank = {name: k for k, name in enumerate(order)}
    return sorted(files, key=lambda f: (rank.get(f.parent.name, len(rank)), f.parent.name))


def _read(file: Path) -> dict:
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(file, None, f"unreadable metrics file: {exc}") from None
    for key in ("strategy", "experiences", "zero_shot", "accuracy_matrix"):
        if key not in doc:
            raise ConfigError(file, key, "required field is missing (not a clsim metrics.json?)")
    nan = float("nan")  # JSON null is a NaN accuracy (an empty test set)
    doc["zero_shot"] = [nan if v is None else v for v in doc["zero_shot"]]
    doc["accuracy_matrix"] = [[nan if v is None else v for v in row] for row in doc["accuracy_matrix"]]
    return doc


def _labels(files: list[Path], docs: list[dict]) -> list[str]:
    """Strategy names, prefixed by run (and scenario) folder only where names would clash."""
    for depth in range(3):
        labels = ["/".join([*f.parent.parts[-1 - depth:-1], d["strategy"]]) if depth else d["strategy"]
                  for f, d in zip(files, docs)]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{label} #{k}" for k, label in enumerate(labels)]


def load(paths: Sequence[Path], pool_seeds: bool = False) -> list[Entry]:
    """Every strategy found under ``paths``, in the order given (files sorted within a folder).
    ``pool_seeds``: the same strategy, run the same way, in several run folders with different
    seeds (``make run``'s seed 0 and the report's seeds 1 and 2) is one entry over all of them."""
    files: list[Path] = []
    for p in paths:
        files += [f for f in metrics_files(Path(p)) if f not in files]
    docs = [_read(f) for f in files]
    if not pool_seeds:
        docs = [_merged([f], [d]) for f, d in zip(files, docs)]
        return [Entry(label, f.parent, d) for label, f, d in zip(_labels(files, docs), files, docs)]
    recipes = [_recipe(f) for f in files]
    groups: list[list[int]] = []  # indices of the files that are one strategy, first file first
    for k, d in enumerate(docs):
        group = next((g for g in groups if recipes[k] == recipes[g[0]] and _same_run_of(d, [docs[i] for i in g])),
                     None)
        if group is None:
            groups.append([k])
        else:
            group.append(k)
    docs = [_merged([files[i] for i in g], [docs[i] for i in g]) for g in groups]
    more = [tuple(files[i].parent.parent for i in g[1:]) for g in groups]
    files = [files[g[0]] for g in groups]
    return [Entry(label, f.parent, d, m) for label, f, d, m in zip(_labels(files, docs), files, docs, more)]


def _recipe(file: Path) -> dict | None:
    """How a strategy's metrics.json was made, from its run folder's plan.json: the model, the
    stream (sizes, topics, protocol) and the strategy's resolved plugins and training options."""
    plan = file.parent.parent / "plan.json"
    try:
        p = json.loads(plan.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    spec = next((s for s in p.get("strategies", []) if s.get("name") == file.parent.name), None)
    if spec is None:
        return None
    return {"model": p["scenario"].get("model"), "stream": p["scenario"].get("stream"),
            **{k: spec.get(k) for k in ("preset", "template", "plugins", "train", "extensions")}}


def _same_run_of(doc: dict, group: list[dict]) -> bool:
    """``doc`` holds more seeds of ``group``'s strategy: the same name, experiences and
    hyper-parameters (the seed aside), and seeds none of the group has."""
    first = group[0]
    if doc.get("strategy") != first.get("strategy") or not all("per_seed" in d for d in (doc, first)):
        return False
    params = lambda d: {k: v for k, v in (d.get("hparams") or {}).items() if k != "seed"}  # noqa: E731
    taken = {s for d in group for s in d.get("seeds") or []}
    return (doc["experiences"] == first["experiences"] and params(doc) == params(first)
            and not taken & set(doc.get("seeds") or []))


def _merged(files: list[Path], docs: list[dict]) -> dict:
    """One strategy's documents (one run folder's, or several holding different seeds) aggregated
    again from its seeds' own documents: those are the source of truth, and the strategy's file is
    derived from them, perhaps by an older clsim. A lone document is kept as written where one of
    its seeds' documents is missing (a seed still running, or a copied file)."""
    from clsim.results import aggregate

    seeds = [s for d in docs for s in d.get("seeds") or []]
    found = [f.parent / f"seed_{s}" / "metrics.json" for f, d in zip(files, docs) for s in d.get("seeds") or []]
    present = [f for f in found if f.is_file()]
    if len(docs) == 1 and (not found or len(present) < len(found)):
        return docs[0]
    out = aggregate([_read(f) for f in present], sorted(seeds))
    errors = [d["error"] for d in docs if d.get("error")]
    return {**out, "error": "; ".join(errors)} if errors else out


# --------------------------------------------------------------------------- tables
def rows(entries: Sequence[Entry]) -> tuple[list[str], list[list[Any]]]:
    """The comparison table (clsim.tables.COLUMNS) as CSV: column keys (with interval bounds) and
    rows, labels as strategy names, the majority-class reference last."""
    return csv_rows(*table([e.doc for e in entries], [e.label for e in entries]))


def markdown(entries: Sequence[Entry], plots: Sequence[str] = (), baselines: Sequence[str] = ()) -> str:
    """comparison.md: the table, paired differences (to the default baseline and ``baselines``), margins."""
    docs = [{**e.doc, "strategy": e.label} for e in entries]
    seeds = max((len(e.doc.get("seeds") or []) for e in entries), default=1)
    lines = ["# Strategy comparison", "",
             "Accuracy in [0, 1]; `bal_` = balanced accuracy; bwt < 0 and forgetting > 0 mean forgetting; "
             f"`train_s`/`eval_s` in seconds; mean over {seeds} seed(s)"
             + (" ± half the 95 % interval" if seeds > 1 else "") + ".", ""]
    cols, body = table(docs)
    if is_online(docs):
        lines += [ONLINE_NOTE, ""]
    lines += markdown_rows([c.key for c in cols], [[fmt(v, c.kind) for v, c in zip(r, cols)] for r in body])
    lines += tables_after(docs, baselines)
    where = lambda run, pooled: f"{run.parent.name}/{run.name}" if pooled else run.name  # noqa: E731
    lines += ["", "Sources:", ""] + [f"- `{e.label}`: `{e.path.name}` in run `{where(e.path.parent, e.more)}`"
                                     + "".join(f" and run `{where(m, True)}`" for m in e.more)
                                     + (f" (seeds {', '.join(map(str, e.doc['seeds']))})" if e.more else "")
                                     for e in entries]
    if plots:
        lines += [""] + [f"![{Path(p).stem.replace('_', ' ')}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return atomic_write_bytes(path, buf.getvalue())


def _style(k: int) -> dict:
    return {"color": PALETTE[k % len(PALETTE)], "marker": MARKERS[k % len(MARKERS)]}


def _grid(n: int, most: int = 3) -> tuple[int, int]:
    """Rows and columns for n panels, at most ``most`` per row, rows as even as possible."""
    nrows = math.ceil(n / most)
    return nrows, math.ceil(n / nrows)


def plot_per_experience(entries: Sequence[Entry], path: Path) -> Path:
    """One panel per strategy: accuracy on each experience's test set over the stream
    (zero-shot first); a hollow marker shows where that experience was trained."""
    nrows, ncols = _grid(len(entries))
    fig = figure(4.6 * ncols, 3.4 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    handles = {}
    for k, e in enumerate(entries):
        ax = axes[k // ncols][k % ncols]
        R, names = e.R, e.names
        x = np.arange(-1, len(R))
        for j, name in enumerate(names):
            y = np.concatenate([[e.zero_shot[j]], R[:, j]])
            (h,) = ax.plot(x, y, linewidth=1.6, markersize=4.5, label=name, **_style(j))
            handles.setdefault(name, h)
            if j < len(R):
                ax.plot([j], [R[j, j]], linestyle="none", marker="o", markersize=10, markerfacecolor="none",
                        markeredgecolor=_style(j)["color"], markeredgewidth=1.4)
        ax.set_title(e.label, fontsize=11)
        ax.set_xticks(x, ["zero-shot", *names[: len(R)]], rotation=35, ha="right", fontsize=8.5)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if k % ncols == 0:
            ax.set_ylabel("test accuracy")
        ax.set_xlabel("after training on")
    for k in range(len(entries), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.legend(list(handles.values()), list(handles), title="accuracy on the test set of", loc="outside lower center",
               ncols=min(len(handles), 8), frameon=False, fontsize=9)
    fig.suptitle("Accuracy on each experience over the stream (ring: the experience just trained)", fontsize=12)
    return _save(fig, path)


def _shared_names(entries: Sequence[Entry]) -> list[str] | None:
    names = [e.names for e in entries]
    return names[0] if all(n == names[0] for n in names) else None


def plot_average_accuracy(entries: Sequence[Entry], path: Path) -> Path:
    """All strategies in one plot: average accuracy over the experiences seen so far."""
    fig = figure(8.5, 4.6)
    ax = fig.add_subplot()
    T = max(len(e.R) for e in entries)
    for k, e in enumerate(entries):
        R = e.R
        acc = [float(np.nanmean(R[i, : i + 1])) for i in range(len(R))]
        ax.plot(np.arange(len(acc)), acc, linewidth=2, markersize=6, label=e.label, **_style(k))
        band = (e.doc.get("running_intervals") or {}).get("acc")
        if band and len(band[0]) == len(acc) and all(v is not None and math.isfinite(v) for v in band[0] + band[1]):
            ax.fill_between(np.arange(len(acc)), band[0], band[1], color=_style(k)["color"], alpha=0.15, linewidth=0)
    shared = _shared_names(entries)
    ticks = np.arange(T)
    ax.set_xticks(ticks, shared[:T] if shared else [str(t + 1) for t in ticks], rotation=20 if shared else 0)
    ax.set_xlabel("after training on" if shared else "experiences trained")
    ax.set_ylabel("average accuracy on experiences seen so far")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=9,
              frameon=False)
    seeds = max((len(e.doc.get("seeds") or []) for e in entries), default=1)
    ax.set_title("Average accuracy after each experience" + (f" (mean of {seeds} seeds, band: 95 % interval)"
                                                             if seeds > 1 else ""))
    return _save(fig, path)


def plot_matrices(entries: Sequence[Entry], path: Path, key: str = "accuracy_matrix",
                  title: str = "Accuracy matrices R[i][j]") -> Path:
    """The accuracy (or balanced accuracy) matrices side by side (rows: trained on, columns: tested on)."""
    nrows, ncols = _grid(len(entries), 4)
    T = max(len(e.names) for e in entries)
    side = 1.2 + 0.55 * T
    fig = figure(side * ncols + 1.0, side * nrows + 0.5)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for k, e in enumerate(entries):
        ax = axes[k // ncols][k % ncols]
        mat = np.asarray(e.doc.get(key, e.doc["accuracy_matrix"]), dtype=float).reshape(-1, len(e.names))
        im = draw_matrix(ax, mat, e.names, e.label)
        if k % ncols:
            ax.set_ylabel("")
    for k in range(len(entries), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02, label="accuracy")
    fig.suptitle(title, fontsize=12)
    return _save(fig, path)


def plot_cost_quality(entries: Sequence[Entry], path: Path) -> Path:
    """Final accuracy vs training seconds, and vs bytes communicated for federated runs."""
    fed = [e for e in entries if e.bytes_total is not None]
    fig = figure(5.5 * (2 if fed else 1) + 2.0, 4.6)
    axes = fig.subplots(1, 2 if fed else 1, squeeze=False, sharey=True)[0]
    panels = [(axes[0], entries, lambda e: e.value("train_seconds"), "training time (s)")]
    if fed:
        panels.append((axes[1], fed, lambda e: e.bytes_total, "bytes communicated, up + down (federated)"))
    index = {e.label: k for k, e in enumerate(entries)}
    online = any(e.value("online_acc") is not None for e in entries)  # online: served accuracy vs its training
    if online:
        panels[0] = (axes[0], entries, lambda e: e.value("online_samples"), "samples trained during the stream")
    for ax, group, xval, xlabel in panels:
        for e in group:
            x, y = xval(e), e.value("online_acc" if online else "acc")
            if x is None or y is None:
                continue
            style = _style(index[e.label])
            ax.scatter([x], [y], s=80, label=e.label, zorder=3, c=style["color"], marker=style["marker"])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("online accuracy (online_acc)" if online else "final average accuracy (acc)")
        ax.grid(alpha=0.3)
        ax.margins(x=0.2, y=0.15)
        if xlabel.startswith("bytes"):
            ax.set_xscale("log")
    axes[0].set_title("Quality vs cost: samples trained" if online else "Quality vs cost: training time")
    if fed:
        axes[1].set_title("Quality vs cost: communication")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=9)
    return _save(fig, path)


def online_curve(doc: dict) -> dict | None:
    """Accuracy over time of an online run: an aggregate's curve, or one seed's computed."""
    return doc.get("online_curve") or (OM.curve([doc]) if doc.get("online") else None)


def plot_online(entries: Sequence[Entry], path: Path, smooth: int = 3) -> Path:
    """Online protocol: accuracy of the model in service on each arriving batch over time (mean of
    ``smooth`` steps, mean over seeds, 95 % band), drift points dashed,
    re-fine-tunes marked; below, the samples trained so far (deterministic, unlike seconds on a shared machine)."""
    fig = figure(11.0, 7.2)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    shown = [(k, e, c) for k, e in enumerate(entries) if (c := online_curve(e.doc))]
    kernel = np.ones(smooth) / smooth

    def smoothed(y):
        y = np.asarray(y, dtype=float)
        return np.convolve(np.pad(y, (smooth - 1, 0), mode="edge"), kernel, mode="valid") if smooth > 1 else y

    for k, e, c in shown:
        style = _style(k)
        y, x = smoothed(c["accuracy"]), np.arange(len(c["accuracy"]))
        top.plot(x, y, linewidth=1.8, color=style["color"], label=e.label)
        lo, hi = c["accuracy_interval"]
        if all(v is not None and math.isfinite(v) for v in lo + hi):
            top.fill_between(x, smoothed(lo), smoothed(hi), color=style["color"], alpha=0.06, linewidth=0)
        refits = sorted(set(c["refits"][0])) if c["refits"] else []
        top.plot(refits, y[refits], linestyle="none", marker=style["marker"], markersize=6, color=style["color"])
        bottom.plot(x, c.get("samples_cumulative", np.zeros(len(x))), linewidth=1.8, color=style["color"])
    if shown:
        c, names = shown[0][2], shown[0][1].names
        for d in c["drift_points"]:
            for ax in (top, bottom):
                ax.axvline(d - 0.5, color="0.4", linestyle="--", linewidth=1)
        for exp, first, n in c["segments"]:
            top.text(first + n / 2 - 0.5, 1.01, names[exp], ha="center", va="bottom", fontsize=9,
                     transform=top.get_xaxis_transform())
    majority = [e.value("online_majority") for _, e, _ in shown if e.value("online_majority") is not None]
    if majority:  # the constant predictor of the stream's most common label
        top.axhline(float(np.mean(majority)), color="0.3", linestyle=":", linewidth=1.2, label="majority class")
    top.set_ylim(0, 1)
    top.set_ylabel(f"accuracy on arrival (mean of {smooth} steps)")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    bottom.set_ylabel("samples trained so far")
    bottom.set_xlabel("time step (dashed: drift points; markers: re-fine-tunes, first seed)")
    bottom.grid(alpha=0.3)
    seeds = max((len(e.doc.get("seeds") or []) for e in entries), default=1)
    fig.suptitle("Serving a drifting stream: accuracy of the model in service before it learns from each batch"
                 + (f" (mean of {seeds} seeds, band: 95 % interval)" if seeds > 1 else ""), fontsize=11)
    return _save(fig, path)


# --------------------------------------------------------------------------- all at once
def write_comparison(entries: Sequence[Entry], out_dir: Path, baselines: Sequence[str] = ()) -> dict[str, Path]:
    """comparison.md, comparison.csv and the PNGs in ``out_dir``; returns name -> path. ``baselines``:
    strategies to show paired differences to, besides the default (naive, or frozen online)."""
    if not entries:
        raise ConfigError(None, None, "nothing to compare")
    labels = [e.label for e in entries]
    for b in baselines:
        if b not in labels:
            raise ConfigError(None, "--baseline", f"no strategy named {b!r} among the compared; have {labels}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {
        "accuracy_per_experience.png": plot_per_experience(entries, out / "accuracy_per_experience.png"),
        "average_accuracy.png": plot_average_accuracy(entries, out / "average_accuracy.png"),
        "accuracy_matrices.png": plot_matrices(entries, out / "accuracy_matrices.png"),
        "balanced_accuracy_matrices.png": plot_matrices(entries, out / "balanced_accuracy_matrices.png",
                                                        "balanced_accuracy_matrix", "Balanced accuracy matrices"),
        "cost_quality.png": plot_cost_quality(entries, out / "cost_quality.png"),
    }
    if any(online_curve(e.doc) for e in entries):
        written["online_accuracy.png"] = plot_online(entries, out / "online_accuracy.png")
    cols, body = rows(entries)
    written["comparison.csv"] = write_csv(out / "comparison.csv", cols, body)
    plots = [name for name in written if name.endswith(".png")]
    written["comparison.md"] = atomic_write_text(out / "comparison.md", markdown(entries, plots, baselines))
    return written
