"""A workaround for Flower 1.42's simulation engine with many clients: idle nodes are not scanned.

The simulation's message pump (``flwr.server.superlink.fleet.vce.vce_api.add_messages_to_queue``)
asks the in-memory link state every 0.1 s, for each virtual SuperNode in turn, whether a message
waits for it; each ask (``InMemoryLinkState.get_message_ins``) walks every stored message and
re-validates it under the state's lock. That costs nodes × messages checks per tick: with 1,000
clients and a round's 10 messages in flight it keeps one of two cores busy in the server process,
and the sampled clients train on what is left — round time grew with *total* clients (measured:
4.6 s a round with 100 clients, 18.5 s with 1,000, the same 10 clients sampled). Flower's
maintainers call the polling a temporary solution (flwrlabs/flower#3369).

:func:`skip_idle_nodes` makes the ask return at once for a node that has no undelivered message
(one read of the store, no lock, no validation) and hands every other ask to Flower's own method
unchanged, so what is delivered, in which order, and how messages are validated and expired stay
Flower's. It is applied in clsim's simulation process only (``clsim.federated.launch``); a real
SuperLink is a process of its own, untouched.
"""
from __future__ import annotations

import functools

from flwr.server.superlink.linkstate.in_memory_linkstate import InMemoryLinkState

_MARK = "_clsim_skips_idle_nodes"


def skip_idle_nodes() -> bool:
    """Patch ``InMemoryLinkState.get_message_ins`` (once per process); False if Flower no longer has it."""
    original = getattr(InMemoryLinkState, "get_message_ins", None)
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True

    @functools.wraps(original)
    def get_message_ins(self, node_id, limit, *, run_id=None):
        pending = list(self.message_ins_store.values())  # a snapshot: other threads store and delete
        if not any(m.metadata.dst_node_id == node_id and m.metadata.delivered_at == "" for m in pending):
            return []
        return original(self, node_id, limit, run_id=run_id)

    setattr(get_message_ins, _MARK, True)
    InMemoryLinkState.get_message_ins = get_message_ins
    return True
