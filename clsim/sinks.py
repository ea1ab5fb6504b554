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

    def __init__(self, log_dir: str | os.PathLike):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
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
                    step: int | None = None) -> None:
        """An hparams-dashboard entry in this same event directory (SummaryWriter.add_hparams
        would create a sub-run). Metrics are tagged ``hparam/<name>`` and also logged as
        scalars, which is where the dashboard reads their values from."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        # torch encodes bools as numbers 1/0 (its int check comes first); "True"/"False"
        # reads better in the dashboard. Anything not str/int/float is stringified too.
        hp = {str(k): v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v)
              for k, v in hparams.items()}
        tags = {(k if k.startswith("hparam/") else f"hparam/{k}"): v for k, v in metrics.items()}
        exp, ssi, sei = hparams_summary(hp, {t: 0.0 for t in tags})
        fw = self.writer._get_file_writer()
        for s in (exp, ssi, sei):
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
