"""Numeric precision (``train.precision``): one autocast context shared by training and evaluation.

``auto`` is bf16 where the hardware computes it natively (a GPU that supports it; a CPU with
AMX-BF16 or AVX512-BF16) and fp32 elsewhere: emulated bf16 is slower than fp32, native bf16 is
about twice as fast. What ran is recorded in every run's hyper-parameters (``precision``)."""
from __future__ import annotations

from functools import lru_cache

import torch

PRECISIONS = ("fp32", "bf16", "auto")


@lru_cache(maxsize=None)
def native_bf16(device_type: str = "cpu") -> tuple[bool, str]:
    """Whether bf16 is native on ``device_type`` (``cpu`` or ``cuda``), and the hardware in words."""
    if device_type == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return native, "GPU with native bf16" if native else "GPU without native bf16"
    try:
        flags = set(" ".join(ln for ln in open("/proc/cpuinfo", encoding="utf-8") if ln.startswith("flags")).split())
    except OSError:
        return False, "CPU whose flags cannot be read (no /proc/cpuinfo): native bf16 unknown"
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    if native:
        return True, "CPU with " + " + ".join(native)
    return False, "CPU without native bf16 (no AMX-BF16, no AVX512-BF16; bf16 is emulated, so slower than fp32)"


def resolve(precision: str, device: str | torch.device) -> str:
    """The precision that runs on ``device``: ``fp32`` or ``bf16`` (``auto`` decided by :func:`native_bf16`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(torch.device(device).type)[0] else "fp32"
    return precision


def autocast(device: str | torch.device, precision: str):
    """``torch.autocast`` to bf16 on ``device`` where ``precision`` resolves to bf16; a disabled (no-op) one for fp32."""
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                          enabled=resolve(precision, device) == "bf16")
