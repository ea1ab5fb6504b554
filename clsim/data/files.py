"""A user's own table (CSV, JSONL or Parquet, chosen by suffix) as a stream of experiences.

Experiences are either the listed values of ``domain_column``, in the listed order, or
``windows`` consecutive equal-count windows of the rows sorted by ``time_column`` (a stable
sort, so ties keep file order), named ``window_0``, ``window_1``, ...

Rows without usable text (missing, or only whitespace), without a label, or — in time mode —
without a time are dropped, counted and reported with one ``logging`` warning each: a few bad
rows in a large export should not stop a run, but they should not vanish silently either.
Labels may be strings or integers; ``label_names`` are the file's distinct labels as strings,
sorted (so integer labels 0/1/2 become "0"/"1"/"2").

With ``dedupe`` (the default) duplicates are removed from the whole table before it is cut into
experiences, as for the tweets (``clsim.data.clean``: case, whitespace, a leading ``RT @user:``,
URLs and @mentions do not make a text different; texts whose copies disagree on the label are
dropped; the first row of every other text is kept). Row ids are the 0-based rows of the table
as read (CSV: data rows after the header; JSONL: lines; Parquet: rows).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from clsim.config import ConfigError, FileStream
from clsim.data.clean import dedupe, report
from clsim.data.pool import Pool, Source, file_sha256

log = logging.getLogger(__name__)

READERS = {
    ".csv": pd.read_csv,
    ".jsonl": lambda p: pd.read_json(p, lines=True, dtype=False, convert_dates=False),
    ".ndjson": lambda p: pd.read_json(p, lines=True, dtype=False, convert_dates=False),
    ".parquet": pd.read_parquet,
}


def read_table(path: Path, file: str | Path | None = None) -> pd.DataFrame:
    """The file as a DataFrame; a missing, unreadable or empty file is a ConfigError on stream.path."""
    if not path.is_file():
        raise ConfigError(file, "stream.path", f"file not found: {path}")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(file, "stream.path", f"unsupported file type {path.suffix!r}; "
                                               f"expected one of {', '.join(READERS)}")
    try:
        df = reader(path)
    except Exception as exc:  # any parser failure on a user's file is a user-facing error
        raise ConfigError(file, "stream.path", f"could not read {path.name}: {type(exc).__name__}: {exc}") from None
    if df.empty:
        raise ConfigError(file, "stream.path", f"{path.name} has no rows")
    return df


def _require(df: pd.DataFrame, column: str, field: str, file) -> None:
    if column not in df.columns:
        raise ConfigError(file, f"stream.{field}", f"column {column!r} not in data; columns are {list(map(str, df.columns))}")


def _drop(df: pd.DataFrame, bad: pd.Series, what: str, path: Path) -> pd.DataFrame:
    if bad.any():
        log.warning("%s: dropped %d of %d rows with %s", path, int(bad.sum()), len(df), what)
    return df[~bad]


def _as_strings(values: pd.Series) -> pd.Series:
    """Labels or domain values as strings; whole-number floats (ints that met a NaN) lose their ``.0``."""
    if pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        values = values.astype("Int64")
    return values.astype(str)


def _sort_key(values: pd.Series, file) -> pd.Series:
    """Numbers and datetimes sort as they are; strings must parse as dates."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values
    try:
        return pd.to_datetime(values, utc=True, format="mixed")
    except (ValueError, TypeError):
        raise ConfigError(file, "stream.time_column", "values are neither numbers nor dates "
                                                      f"(e.g. {values.iloc[0]!r})") from None


def source(cfg: FileStream, file: str | Path | None = None) -> Source:
    """One pool per listed domain value, or per time window."""
    path = Path(cfg.path)
    df = read_table(path, file)
    _require(df, cfg.text_column, "text_column", file)
    _require(df, cfg.label_column, "label_column", file)
    split_column, split_field = ((cfg.domain_column, "domain_column") if cfg.domain_column
                                 else (cfg.time_column, "time_column"))
    _require(df, split_column, split_field, file)
    df = df.reset_index(drop=True)  # row ids: positions in the table as read

    text = df[cfg.text_column]
    df = _drop(df, text.isna() | (text.astype(str).str.strip() == ""), "empty text", path)
    df = _drop(df, df[cfg.label_column].isna(), "no label", path)
    if cfg.time_column:
        df = _drop(df, df[cfg.time_column].isna(), "no time", path)
    if df.empty:
        raise ConfigError(file, "stream.path", f"{path.name} has no rows with both text and a label")

    label_str = _as_strings(df[cfg.label_column])
    counts = None
    if cfg.dedupe:
        keep, counts = dedupe(df[cfg.text_column].astype(str).tolist(), label_str.tolist())
        report(str(path), counts)
        df, label_str = df.iloc[keep], label_str.iloc[keep]
        if df.empty:
            raise ConfigError(file, "stream.path", f"{path.name}: no rows left after removing duplicates "
                                                   "with conflicting labels")
    texts = df[cfg.text_column].astype(str).to_numpy(dtype=object)
    row_ids = df.index.to_numpy(dtype=np.int64)
    label_names = sorted(label_str.unique().tolist())
    labels = label_str.map({name: k for k, name in enumerate(label_names)}).to_numpy(dtype=np.int64)

    def pool(name: str, rows: np.ndarray, field: str) -> Pool:
        return Pool(name, texts[rows].tolist(), labels[rows], field, row_ids[rows])

    out = []
    if cfg.domain_column:
        domains = _as_strings(df[cfg.domain_column]).fillna("").to_numpy(dtype=object)  # "": no domain
        present = sorted(set(domains.tolist()) - {""})
        for i, value in enumerate(cfg.experiences):
            rows = np.flatnonzero(domains == value)
            if len(rows) == 0:
                shown = present[:20] + (["..."] if len(present) > 20 else [])
                raise ConfigError(file, f"stream.experiences[{i}]",
                                  f"domain {value!r} not found in column {cfg.domain_column!r}; values are {shown}")
            out.append(pool(value, rows, f"stream.experiences[{i}]"))
    else:
        rank = _sort_key(df[cfg.time_column], file).rank(method="first")  # ties keep file order
        order = np.argsort(rank.to_numpy(), kind="stable")
        for k, rows in enumerate(np.array_split(order, cfg.windows)):
            out.append(pool(f"window_{k}", rows, "stream.windows"))
    description = {"kind": "file", "path": str(path), "sha256": file_sha256(path), "text_column": cfg.text_column,
                   "label_column": cfg.label_column, "dedupe": cfg.dedupe,
                   "rows": "0-based row of the table as read (CSV: data row after the header; JSONL: line; "
                           "Parquet: row)"}
    return Source(out, label_names, description, counts.as_dict() if counts else None)


def row_reader(description: dict):
    """``lookup(index, rows) -> (texts, label names)`` over the table a split record names."""
    df = read_table(Path(description["path"])).reset_index(drop=True)
    texts, labels = df[description["text_column"]].astype(str), _as_strings(df[description["label_column"]])
    return lambda index, rows: (texts.iloc[rows].tolist(), labels.iloc[rows].tolist())
