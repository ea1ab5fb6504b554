"""Mixed precision (``train.precision: bf16``, or ``auto`` where bf16 is native) as an Avalanche plugin.

The forward pass and the loss run under ``torch.autocast`` (bf16 matmuls: AMX on recent
CPUs, tensor cores on GPUs); the backward pass and the optimizer step run outside it, on
the fp32 master weights, as PyTorch recommends. Nothing else in the loop changes, so every
preset (replay, EWC, LwF, …) gains mixed precision without knowing about it.
"""
from __future__ import annotations

from avalanche.core import SupervisedPlugin

from clsim.precision import autocast, resolve


class AutocastPlugin(SupervisedPlugin):
    """Enter autocast before the forward, leave it before the backward."""

    def __init__(self, precision: str = "bf16"):
        super().__init__()
        resolve(precision, "cpu")  # a bad value fails here, not at the first batch
        self.precision = precision
        self._ctx = None

    def before_forward(self, strategy, **kwargs):
        self._exit()
        self._ctx = autocast(strategy.device, self.precision)
        self._ctx.__enter__()

    def before_backward(self, strategy, **kwargs):
        self._exit()

    def after_training_exp(self, strategy, **kwargs):
        self._exit()  # never leak the context if an iteration stopped half-way

    def _exit(self):
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.__exit__(None, None, None)
