"""Data sources (tweets, synthetic, files), cleaned and split into the stream of experiences they feed."""
from clsim.data.clean import DedupCounts, dedupe, normalise
from clsim.data.pool import Experience, Pool, Source, Split, Stream, derive_seed
from clsim.data.record import read_record, split_record
from clsim.data.stream import build_stream
from clsim.data.synthetic import DOMAINS, generate

__all__ = ["DedupCounts", "dedupe", "normalise", "Experience", "Pool", "Source", "Split", "Stream", "derive_seed",
           "read_record", "split_record", "build_stream",
           "DOMAINS", "generate"]
# clsim.data.tweets and clsim.data.files are imported where a stream needs them: they bring pandas (~0.4 s)
