"""The topics of the tweet corpus: an ordered table of case-insensitive regexes, first match wins.

The corpus keeps no topic column; these rules recover six topics from the text. The order
resolves overlaps (a Coachella tweet that mentions football stays Coachella; an airline
complaint that mentions @apple stays airline). ``cars`` is deliberately literal (self-driving /
driverless / autonomous / automated vehicles). Scenario files name topics from this table, and
``clsim.data.tweets`` assigns them; nothing else lists them.
"""
from __future__ import annotations

TOPIC_RULES: tuple[tuple[str, str], ...] = (
    ("airline", r"@(?:united|usairways|americanair|southwestair|jetblue|virginamerica)\b"),
    ("coachella", r"coachella"),
    ("claritin", r"claritin"),
    ("cars", r"self[-\s#]*driving|driver[-\s]*less|autonomous|automated (?:car|vehicle)"),
    ("deflategate", r"deflat|brady|patriots|belichick|goodell|\bpats\b|\bnfl\b|footballs|super ?bowl|seahawks"),
    ("apple", r"\bapple\b|aapl|iphone|ipad|itunes|tim cook"),
)
TOPICS: tuple[str, ...] = tuple(topic for topic, _ in TOPIC_RULES)
