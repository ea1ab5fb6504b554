"""Model parameters <-> Flower ``ArrayRecord``: only what trains travels.

With ``finetune: full`` every parameter is trainable; with ``head``, ``partial`` or ``lora``
the frozen ones are identical on every node (same pretrained weights, same seeded head
init), so sending them would only cost bytes. Names are the model's own parameter names.
"""
from __future__ import annotations

import torch
from flwr.app import ArrayRecord


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu() for name, p in model.named_parameters() if p.requires_grad}


def to_record(model: torch.nn.Module) -> ArrayRecord:
    """The model's trainable parameters as an ArrayRecord."""
    return ArrayRecord(trainable_state(model))


@torch.no_grad()
def load_record(model: torch.nn.Module, record: ArrayRecord) -> None:
    """Copy ``record`` into the model's trainable parameters; the names must match exactly."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, extra = sorted(set(params) - set(record)), sorted(set(record) - set(params))
    if missing or extra:
        raise ValueError(f"arrays do not fit the model: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, arr in record.items():
        params[name].copy_(torch.from_numpy(arr.numpy()).to(params[name].dtype))


def record_bytes(content) -> int:
    """Bytes a message's records carry (``count_bytes`` of every record in a RecordDict)."""
    return int(sum(rec.count_bytes() for rec in content.values()))
