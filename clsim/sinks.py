"""Writers: files written atomically, and TensorBoard event files.

Every file a run writes goes through :func:`atomic_write_bytes` (temp file in the same
directory, fsync, ``os.replace``), so a crash or a concurrent reader never sees a half-written
file, and a resumed run can trust whatever it finds on disk. What the files hold is
``clsim.results``' business.
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

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_json", "write_csv", "TensorBoardSink",
           "hparam_values", "hparams_summaries"]


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


class TensorBoardSink:
    """One strategy run's TensorBoard log: per-experience accuracies, stream metrics,
    the accuracy-matrix heatmap and an hparams entry, all in one event directory."""

    def __init__(self, log_dir: str | os.PathLike, purge_step: int | None = None):
        """``purge_step`` (resuming a run): events this directory already holds at steps
        >= ``purge_step`` are hidden from TensorBoard, so a re-done experience is not shown twice."""
        from torch.utils.tensorboard import SummaryWriter  # here: torch's import costs seconds; files don't need it

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
        self._closed = False

    def log_scalar(self, tag: str, value: float, step: int) -> None:
        """Any scalar, e.g. ``train/loss``; NaN/None is skipped (nothing to plot)."""
        if _finite(value):
            self.writer.add_scalar(tag, float(value), int(step))

    def log_text(self, tag: str, text: str, step: int) -> None:
        """A text event (TensorBoard's TEXT tab), e.g. the online protocol's drift points and alarms."""
        self.writer.add_text(tag, text, int(step))

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

    def log_image(self, tag: str, img: np.ndarray, step: int) -> None:
        """An HxWx3 uint8 picture (e.g. the accuracy-matrix heatmap)."""
        self.writer.add_image(tag, img, int(step), dataformats="HWC")

    def add_summaries(self, *summaries) -> None:
        """Raw summary protos (TensorBoard's hparams plugin) into this event directory."""
        fw = self.writer._get_file_writer()
        for s in summaries:
            fw.add_summary(s)

    def log_hparams(self, hparams: Mapping[str, Any], metrics: Mapping[str, float],
                    step: int | None = None, experiment: bool = False) -> None:
        """An hparams-dashboard session in this same event directory (SummaryWriter.add_hparams
        would create a sub-run). Metrics are tagged ``hparam/<name>`` and also logged as
        scalars, which is where the dashboard reads their values from.

        The dashboard's columns come from one *experiment* summary, and TensorBoard uses the
        first it finds — so a run folder gets exactly one, at its root, listing every
        strategy's hyper-parameters and metrics (``clsim.results.write_hparams_experiment``).
        ``experiment=True`` adds one here, for a log directory that stands alone."""
        hp = hparam_values(hparams)
        tags = {(k if k.startswith("hparam/") else f"hparam/{k}"): v for k, v in metrics.items()}
        exp, ssi, sei = hparams_summaries(hp, list(tags))
        self.add_summaries(*((exp, ssi, sei) if experiment else (ssi, sei)))
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


def hparam_values(hparams: Mapping[str, Any]) -> dict[str, str | int | float]:
    """torch encodes bools as numbers 1/0 (its int check comes first); "True"/"False" reads
    better in the dashboard. Anything not str/int/float is stringified too."""
    return {str(k): v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else str(v)
            for k, v in hparams.items()}


def hparams_summaries(hp: Mapping[str, Any], metric_tags: Sequence[str], domains: Mapping[str, list] | None = None):
    from torch.utils.tensorboard.summary import hparams as hparams_summary  # here: as in TensorBoardSink

    return hparams_summary(dict(hp), {t: 0.0 for t in metric_tags}, hparam_domain_discrete=dict(domains or {}))


def _check_len(values: Sequence, names: Sequence[str]) -> None:
    if len(values) != len(names):
        raise ValueError(f"{len(values)} values for {len(names)} experience names")
