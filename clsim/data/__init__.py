"""Data sources (tweets, synthetic, files) and the stream of experiences they feed."""
from clsim.data.pool import Experience, Pool, Split, Stream, derive_seed
from clsim.data.stream import build_stream
from clsim.data.synthetic import DOMAINS, generate
from clsim.data.tweets import TOPIC_RULES, assign_topic, load_tweets, topic_counts

__all__ = ["Experience", "Pool", "Split", "Stream", "build_stream", "derive_seed", "DOMAINS", "generate",
           "TOPIC_RULES", "assign_topic", "load_tweets", "topic_counts"]
