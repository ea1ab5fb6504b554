"""Writers for run outputs: TensorBoard event files and the results/ directory.

Every file under results/ is written atomically (temp file in the same directory,
fsync, ``os.replace``) so a crash or a concurrent reader never sees a half-written
file, and a resumed run can trust whatever it finds on disk.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "write_json",
    "write_csv",
    "TensorBoardSink",
    "write_strategy_results",
    "write_summary",
    "write_hparams_experiment",
    "SUMMARY_COLUMNS",
]

SUMMARY_COLUMNS = (
    "strategy", "acc", "bwt", "fwt", "forgetting", "learning_acc",
    "train_s", "eval_s", "samples", "trainable_params",
)


# --------------------------------------------------------------------------- files

def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; the old content survives any failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(d: Path) -> None:
    """Persist the rename itself (best effort; not all platforms allow it)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    """Plain JSON types; numpy unwrapped; NaN/inf become None (JSON null), since JSON has no NaN."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON, with non-finite floats as null."""
    text = json.dumps(_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Atomically write a CSV file; None and non-finite cells are written empty."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow(["" if v is None else _jsonable(v) for v in row])
    return atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- TensorBoard

def _finite(x: Any) -> bool:
    return x is not None and math.isfinite(float(x))


def render_matrix(R, names: Sequence[str], title: str = "accuracy matrix") -> np.ndarray:
    """Heatmap of R (rows: trained on, columns: tested on) as an HxWx3 uint8 array.

    Uses the object-oriented matplotlib API with an Agg canvas (no pyplot, no global
    backend state) and the colour-blind-safe ``cividis`` colormap; NaN cells stay blank.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    a = np.asarray(R, dtype=float)
    if a.ndim != 2 or a.shape[1] != len(names) or a.shape[0] > len(names):
        raise ValueError(f"matrix of shape {a.shape} does not fit {len(names)} experience names")
    n = len(names)
    size = 2.0 + 0.7 * n
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(a), cmap="cividis", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), labels=list(names), rotation=45, ha="right")
    ax.set_yticks(range(a.shape[0]), labels=list(names[: a.shape[0]]))
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title(title)
    for i in range(a.shape[0]):
        for j in range(n):
            if math.isfinite(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if a[i, j] > 0.6 else "white")
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    return img


class TensorBoardSink:
    """One strategy run's TensorBoard log: per-experience accuracies, stream metrics,
    the accuracy-matrix heatmap and an hparams entry, all in one event directory."""

    def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None):
        """``purge_step`` (resuming a run): events this directory already holds at steps
        >= ``purge_step`` are hidden from TensorBoard, so a re-done experience is not shown twice."""
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
        self._closed = False

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        """Any scalar, e.g. ``train/loss``; NaN/None is skipped (nothing to plot)."""
        if _finite(value):
            self.writer.add_scalar(tag, float(value), int(step))

    def log_zero_shot(self, z: Sequence[float], names: Sequence[str]) -> None:
        """Accuracy of the untrained model on each experience: ``zero_shot/<name>`` at step 0."""
        _check_len(z, names)
        for name, v in zip(names, z):
            self.log_scalar(f"zero_shot/{name}", v, 0)

    def log_row(self, i: int, row: Sequence[float], names: Sequence[str],
                running: Mapping[str, float]) -> None:
        """After training experience i: ``accuracy/<name>`` for every test set and the
        running stream metrics ``stream/<metric>`` (NaN ones, e.g. bwt at i=0, skipped)."""
        _check_len(row, names)
        for name, v in zip(names, row):
            self.log_scalar(f"accuracy/{name}", v, i)
        for metric, v in running.items():
            self.log_scalar(f"stream/{metric}", v, i)

    def log_matrix(self, R, names: Sequence[str], step: int) -> None:
        """The (possibly partial: rows <= T) accuracy matrix as heatmap image ``accuracy_matrix``."""
        img = render_matrix(R, names)
        self.writer.add_image("accuracy_matrix", img, int(step), dataformats="HWC")

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float],
                    step: int | None = None, experiment: bool = False) -> None:
        """An hparams-dashboard session in this same event directory (SummaryWriter.add_hparams
        would create a sub-run). Metrics are tagged ``hparam/<name>`` and also logged as
        scalars, which is where the dashboard reads their values from.

        The dashboard's columns come from one *experiment* summary, and TensorBoard uses the
        first it finds — so a run folder gets exactly one, at its root, listing every
        strategy's hyper-parameters and metrics (:func:`write_hparams_experiment`).
        ``experiment=True`` adds one here, for a log directory that stands alone."""
        hp = _hparam_values(hparams)
        tags = {(k if k.startswith("hparam/") else f"hparam/{k}"): v for k, v in metrics.items()}
        exp, ssi, sei = _hparams_summaries(hp, list(tags))
        fw = self.writer._get_file_writer()
        for s in ((exp, ssi, sei) if experiment else (ssi, sei)):
            fw.add_summary(s)
        for t, v in tags.items():
            self.log_scalar(t, v, 0 if step is None else step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        if not self._closed:
            self.writer.close()
            self._closed = True

    def __enter__(self) -> "TensorBoardSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _hparam_values(hparams: Mapping[str, Any]) -> dict[str, str | int | float]:
    """torch encodes bools as numbers 1/0 (its int check comes first); "True"/"False" reads
    better in the dashboard. Anything not str/int/float is stringified too."""
    return {str(k): v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v)
            for k, v in hparams.items()}


def _hparams_summaries(hp: Mapping[str, Any], metric_tags: Sequence[str], domains: Mapping[str, list] | None = None):
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    return hparams_summary(dict(hp), {t: 0.0 for t in metric_tags}, hparam_domain_discrete=dict(domains or {}))


# Final numbers the hparams dashboard shows for every strategy (``hparam/<name>`` scalars);
# bytes only where a (federated) run reports them.
HPARAM_METRICS = ("acc", "bwt", "fwt", "forgetting", "learning_acc", "train_seconds", "bytes_up", "bytes_down",
                  "bytes_total")


def final_metric(doc: Mapping[str, Any], name: str) -> float | None:
    """A metrics.json document's final value of ``name`` (top level or under ``costs``);
    per-round lists (e.g. ``bytes_up``) are summed; None when absent or not finite."""
    v = doc.get(name, (doc.get("costs") or {}).get(name))
    if isinstance(v, Mapping):
        v = v.get("total")
    if isinstance(v, (list, tuple)):
        flat = np.asarray(v, dtype=float).ravel()
        v = float(np.nansum(flat)) if flat.size else None
    return float(v) if _finite(v) else None


def write_hparams_experiment(run_dir: str | os.PathLike) -> Path | None:
    """Make the hparams dashboard list every strategy of a run folder.

    Reads ``<run_dir>/*/metrics.json``; writes one experiment summary at the run folder's
    root whose columns are the union of all strategies' hyper-parameters and the
    :data:`HPARAM_METRICS` any of them reports; and, in each strategy folder, whatever the
    dashboard would otherwise miss: a session (hyper-parameters from metrics.json) and the
    ``hparam/<metric>`` scalars its value columns read (e.g. federated ``bytes_up``).
    Returns the experiment's event directory, or None when no strategy has metrics."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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
        hp = _hparam_values({**(doc.get("hparams") or {}), "strategy": doc.get("strategy", d.name)})
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
                    _, ssi, sei = _hparams_summaries(hp, [f"hparam/{m}" for m in finals])
                    tb.writer._get_file_writer().add_summary(ssi)
                    tb.writer._get_file_writer().add_summary(sei)
                for t, v in missing.items():
                    tb.log_scalar(t, v, 0)
    # one representative value per column: a string if any session's value is one
    rep, domains = {}, {}
    for k, vals in union.items():
        if any(isinstance(v, str) for v in vals):
            rep[k], domains[k] = str(vals[0]), sorted({str(v) for v in vals})
        else:
            rep[k] = vals[0]
    exp, _, _ = _hparams_summaries(rep, [f"hparam/{m}" for m in metrics], domains)
    for old in root.glob("events.out.tfevents.*"):  # TensorBoard keeps the first experiment it reads
        old.unlink()
    with TensorBoardSink(root) as tb:
        tb.writer._get_file_writer().add_summary(exp)
    return root


def _check_len(values: Sequence, names: Sequence[str]) -> None:
    if len(values) != len(names):
        raise ValueError(f"{len(values)} values for {len(names)} experience names")


# --------------------------------------------------------------------------- results/

def write_strategy_results(dir: str | os.PathLike, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics.json`` (everything) and ``accuracy_matrix.csv`` (zero-shot row first,
    then one row per trained experience) into ``dir``; returns ``dir``."""
    d = Path(dir)
    names = list(metrics["experiences"])
    rows = [["zero_shot", *metrics["zero_shot"]]]
    for i, r in enumerate(metrics["accuracy_matrix"]):
        _check_len(r, names)
        rows.append([names[i], *r])
    write_json(d / "metrics.json", metrics)
    write_csv(d / "accuracy_matrix.csv", ["trained_on", *names], rows)
    return d


def _field(row: Mapping[str, Any], key: str) -> Any:
    """A summary field, taken from the row itself or from its nested ``costs``."""
    if key in row:
        return row[key]
    costs = row.get("costs") or {}
    return costs.get(key)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3f}"
    return str(v).replace("|", "\\|")


def write_summary(run_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]],
                  incomplete: Iterable[str] = ()) -> Path:
    """Side-by-side table of strategies: ``summary.csv`` (full precision) and ``summary.md``
    (3 decimals, ints as ints, a note naming incomplete strategies); returns ``run_dir``."""
    d = Path(run_dir)
    table = [[_field(r, c) for c in SUMMARY_COLUMNS] for r in rows]
    write_csv(d / "summary.csv", SUMMARY_COLUMNS, table)
    lines = [
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(SUMMARY_COLUMNS) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(v) for v in r) + " |" for r in table]
    incomplete = list(incomplete)
    if incomplete:
        lines += ["", f"Incomplete strategies (partial or missing results): {', '.join(incomplete)}"]
    atomic_write_text(d / "summary.md", "\n".join(lines) + "\n")
    return d
