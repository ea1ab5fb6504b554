"""The split record: which corpus rows every experience's train, validation and test split holds.

``split_record(stream)`` is plain JSON data (a run writes it to ``<run>/splits.json``)::

    {"format": "clsim-splits/1",
     "source": {"kind": "tweets", "package": ..., "file": ..., "sha256": ..., "rows": "<what a row id means>", ...},
     "dedup": {"rows": ..., "exact_duplicates": ..., "normalised_duplicates": ...,
               "conflicting_groups": ..., "conflicting_rows": ..., "kept": ...} | null,
     "draw": {"seed": 0, "train_per_experience": ..., "val_per_experience": ..., "test_per_experience": ...},
     "label_names": [...],
     "experiences": {"airline": {"train": [row ids], "val": [...], "test": [...]}, ...}}

``read_record(record)`` goes back from the row ids to the texts and labels, reading the source
again (and refusing a data file whose SHA-256 differs from the recorded one), so anyone can audit
a split without clsim's stream code: the row ids are plain CSV / table rows.
"""
from __future__ import annotations

from typing import Any

from clsim.data import synthetic
from clsim.data.pool import Stream, file_sha256

FORMAT = "clsim-splits/1"
SPLITS = ("train", "val", "test")


def split_record(stream: Stream) -> dict[str, Any]:
    """The stream's splits as corpus row ids, with the source description and the dedup counts."""
    return {
        "format": FORMAT,
        "source": dict(stream.source),
        "dedup": dict(stream.dedup) if stream.dedup is not None else None,
        "draw": dict(stream.draw),
        "label_names": list(stream.label_names),
        "experiences": {e.name: {s: [int(r) for r in getattr(e, s).rows] for s in SPLITS}
                        for e in stream.experiences},
    }


def read_record(record: dict[str, Any]) -> dict[str, dict[str, tuple[list[str], list[str]]]]:
    """``{experience: {split: (texts, label names)}}`` for the rows a record lists, read from its source."""
    if record.get("format") != FORMAT:
        raise ValueError(f"not a split record of format {FORMAT}: {record.get('format')!r}")
    source = record["source"]
    kind = source["kind"]
    if kind == "synthetic":
        lookup = synthetic.row_reader(source)
    elif kind in ("tweets", "file"):
        from clsim.data import files, tweets  # here: they bring pandas, which a synthetic record does not need

        path = tweets.corpus_path() if kind == "tweets" else source["path"]
        if file_sha256(path) != source["sha256"]:
            raise ValueError(f"{path} changed since the record was written (SHA-256 differs)")
        lookup = (tweets if kind == "tweets" else files).row_reader(source)
    else:
        raise ValueError(f"unknown source kind {kind!r}")
    return {name: {split: lookup(index, [int(r) for r in splits[split]]) for split in SPLITS}
            for index, (name, splits) in enumerate(record["experiences"].items())}
