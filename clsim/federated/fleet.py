"""The Grid a Flower strategy talks through: known clients in a fixed order, deadlines, traffic.

``Fleet`` wraps the Grid the ServerApp was given and hands it to the (unchanged) strategy:

- ``discover`` sends every SuperNode the job in a ``query`` message and learns its
  ``partition-id``; it gives up with a clear message if the clients' nodes do not all connect
  within ``node_timeout`` seconds (Flower's own node sampling would wait forever). Connected
  nodes get ``reply_timeout`` to answer (a real SuperNode starts a process per message). The
  queries go out ``JOIN_BATCH`` at a time: Flower's in-memory link state (the simulation's)
  scans every stored message for every node it polls, so 1,000 queries at once would cost a
  million checks per poll.
- ``get_node_ids`` lists the clients' nodes ordered by partition id, so a strategy's seeded
  sampling picks the same clients in every run; it raises after ``node_timeout`` seconds
  short of nodes instead of letting the strategy wait forever.
- ``send_and_receive`` counts the bytes of every record sent and received per round, and keeps
  each client's reply metrics and every error reply (a client that raised, or a node the
  SuperLink declared unavailable after it missed its heartbeats), so the round still
  aggregates the rest and the failure is counted and logged, once, under the client's id.
  Replies go back to the strategy in partition order, so aggregation sums in the same order
  in every run.
- ``round_offset`` (a resumed run): Flower's ``Strategy.start`` counts rounds from 1, so the
  Fleet adds the rounds already done to every message's ``server-round``; clients and the
  round log see the federation's real round.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from clsim.federated.arrays import record_bytes

log = logging.getLogger("flwr")
JOIN_BATCH = 50  # join queries in flight at once


class FederationError(RuntimeError):
    """The federation cannot go on (nodes missing, misconfigured or failing to join)."""


@dataclass
class RoundTraffic:
    """One server round as seen on the wire."""

    round: int
    bytes_down: int = 0
    bytes_up: int = 0
    sent: dict[str, list[int]] = field(default_factory=dict)  # message type -> partition ids
    replies: dict[str, dict[int, dict]] = field(default_factory=dict)  # type -> partition id -> metrics
    failures: list[dict] = field(default_factory=list)  # {"client", "type", "reason"}
    seconds: dict[str, float] = field(default_factory=dict)  # type -> wall time, messages out to replies in


def _server_round(messages: list[Message]) -> int:
    for m in messages:
        for rec in m.content.config_records.values():
            if "server-round" in rec:
                return int(rec["server-round"])
    return 0


def _sender(reply: Message, sent: list[Message]) -> int:
    """The node a reply is about. An error the SuperLink makes for a node that went offline
    ("Node Unavailable") comes from the SuperLink itself: find the node it was sent to."""
    to = {m.metadata.message_id: m.metadata.dst_node_id for m in sent if m.metadata.message_id}
    if reply.has_error() and reply.metadata.reply_to_message_id in to:
        return to[reply.metadata.reply_to_message_id]
    return reply.metadata.src_node_id


class Fleet(Grid):
    def __init__(self, grid: Grid, clients: int, node_timeout: float, poll: float = 0.5, round_offset: int = 0,
                 reply_timeout: float | None = None):
        self.grid, self.clients, self.node_timeout, self.poll = grid, clients, node_timeout, poll
        self.reply_timeout = reply_timeout  # for the join query's replies (None: node_timeout)
        self.round_offset = round_offset
        self.partition_of: dict[int, int] = {}  # node id -> partition id
        self.info: dict[int, dict] = {}  # partition id -> what the client reported when joining
        self.rounds: dict[int, RoundTraffic] = {}
        self._short_since: float | None = None

    # ------------------------------------------------------------------ joining
    def discover(self, job: ConfigRecord) -> None:
        """Send the job to every SuperNode until partitions 0..clients-1 have all joined.

        ``node_timeout`` bounds the wait for nodes that have not connected. A connected node
        answers once its ClientApp has started — on a real SuperNode a fresh process importing
        torch, which can outlast a small ``node_timeout`` — so its reply gets ``reply_timeout``
        (the round deadline), and the time spent waiting for replies does not count against
        the nodes still missing."""
        deadline = time.monotonic() + self.node_timeout
        while True:
            new = [n for n in self.grid.get_node_ids() if n not in self.partition_of]
            for start in range(0, len(new), JOIN_BATCH):
                msgs = [Message(RecordDict({"job": job}), message_type=MessageType.QUERY, dst_node_id=n)
                        for n in new[start:start + JOIN_BATCH]]
                t0 = time.monotonic()
                timeout = self.reply_timeout or max(1.0, deadline - t0)
                for reply in self.grid.send_and_receive(msgs, timeout=timeout):
                    self._join(reply, _sender(reply, msgs))
                if self.reply_timeout:
                    deadline += time.monotonic() - t0
            missing = sorted(set(range(self.clients)) - set(self.partition_of.values()))
            if not missing:
                return
            if time.monotonic() > deadline:
                raise FederationError(
                    f"{self.clients - len(missing)} of {self.clients} clients joined within {self.node_timeout:.0f} s; "
                    f"no SuperNode with partition-id {missing} (start one per client with "
                    f"--node-config \"partition-id=<i> num-partitions={self.clients}\", or raise node_timeout)")
            time.sleep(self.poll)

    def _join(self, reply: Message, node: int) -> None:
        if reply.has_error():
            raise FederationError(f"SuperNode {node} could not join: {reply.error.reason}")
        info = dict(next(iter(reply.content.config_records.values())))
        pid, parts = int(info["partition-id"]), int(info["num-partitions"])
        if parts != self.clients or not 0 <= pid < self.clients:
            raise FederationError(f"SuperNode {node} has partition-id={pid} num-partitions={parts}; this strategy "
                                  f"has {self.clients} clients (expected num-partitions={self.clients})")
        if pid in self.partition_of.values():
            other = next(n for n, p in self.partition_of.items() if p == pid)
            raise FederationError(f"two SuperNodes claim partition-id={pid} ({other} and {node}): this strategy has "
                                  f"{self.clients} clients, one SuperNode each")
        self.partition_of[node] = pid
        self.info[pid] = info

    # ------------------------------------------------------------------ Grid
    def set_run(self, run) -> None:
        self.grid.set_run(run)

    @property
    def run(self):
        return self.grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> list[int]:
        """The clients' connected nodes, by partition id; raises after ``node_timeout`` s short of nodes."""
        connected = set(self.grid.get_node_ids())
        ours = sorted((pid, node) for node, pid in self.partition_of.items() if node in connected)
        if len(ours) < self.clients:
            now = time.monotonic()
            self._short_since = self._short_since or now
            if now - self._short_since > self.node_timeout:
                gone = sorted(set(range(self.clients)) - {pid for pid, _ in ours})
                raise FederationError(f"client(s) {gone} disconnected and did not come back within "
                                      f"{self.node_timeout:.0f} s; stopping the run")
        else:
            self._short_since = None
        return [node for _, node in ours]

    def push_messages(self, messages):
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids):
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages, *, timeout: float | None = None):
        messages = list(messages)
        if not messages:
            return []
        if self.round_offset:
            # each record once: the strategy may share one ConfigRecord between its messages
            records = {id(rec): rec for m in messages for rec in m.content.config_records.values()
                       if "server-round" in rec}
            for rec in records.values():
                rec["server-round"] = int(rec["server-round"]) + self.round_offset
        rnd = _server_round(messages)
        t = self.rounds.setdefault(rnd, RoundTraffic(rnd))
        kind = messages[0].metadata.message_type
        t.sent[kind] = sorted(self.partition_of.get(m.metadata.dst_node_id, -1) for m in messages)
        t.bytes_down += sum(record_bytes(m.content) for m in messages)
        t0 = time.perf_counter()
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        t.seconds[kind] = t.seconds.get(kind, 0.0) + time.perf_counter() - t0
        got = t.replies.setdefault(kind, {})
        pid_of = {id(r): self.partition_of.get(_sender(r, messages), -1) for r in replies}
        for r in replies:
            pid = pid_of[id(r)]
            if r.has_error():
                t.failures.append({"client": pid, "type": kind, "reason": r.error.reason})
                continue
            t.bytes_up += record_bytes(r.content)
            metrics = next(iter(r.content.metric_records.values()), None)
            got[pid] = dict(metrics) if metrics is not None else {}
        replies.sort(key=lambda r: pid_of[id(r)])
        answered = set(pid_of.values())
        for pid in sorted(set(t.sent[kind]) - answered):
            t.failures.append({"client": pid, "type": kind, "reason": f"no reply within {timeout} s"})
        failed = [f for f in t.failures if f["type"] == kind]
        if failed:
            log.warning("round %d %s: %d of %d clients failed, aggregating the rest: %s", rnd, kind, len(failed),
                        len(messages), "; ".join(f"client {f['client']}: {f['reason'][:160]}" for f in failed))
        return replies
