"""Numeric precision (``train.precision``): one autocast context shared by training and evaluation."""
from __future__ import annotations

import torch


def autocast(device: str | torch.device, precision: str):
    """``torch.autocast`` to bf16 on ``device`` for ``precision="bf16"``; a disabled (no-op) one for fp32."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
