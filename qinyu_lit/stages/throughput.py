"""Tokens/s and MFU in TensorBoard: Lightning's ``ThroughputMonitor``, counting real tokens of packs.

Every stage adds it (``QinYuStage.configure_callbacks``). Logged on optimizer steps, averaged over
the last ``log_every_n_steps`` optimizer steps: ``train/device/items_per_sec`` (real, non-padding
tokens per second on one GPU), ``train/device/flops_per_sec`` and ``train/device/mfu`` (against
the dense bf16 peak of ``model/flops.py``; Lightning's own table where the device is not listed
there). The FLOPs of each batch come from the stage's ``flops_per_batch`` (6N + attention within
samples, ``model/flops.py``).
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ThroughputMonitor

from ..model.flops import device_peak


def packs_in(batch: dict) -> int:
    return int(batch["input_ids"].shape[0])


def real_tokens(batch: dict) -> int:
    """Non-padding tokens, from the host-side lengths (no device read)."""
    if "lengths" in batch:
        return sum(sum(row) for row in batch["lengths"])
    return int(batch["input_ids"].numel())


class PackedThroughputMonitor(ThroughputMonitor):
    """``ThroughputMonitor`` over packed batches; window = one logging interval unless given."""

    def __init__(self, window_size: int | None = None):
        super().__init__(batch_size_fn=packs_in, length_fn=real_tokens)
        self.window_size = window_size

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the data module has set accumulate_grad_batches by now (data.tokens_per_step)
        window = self.window_size or trainer.log_every_n_steps * trainer.accumulate_grad_batches
        self.kwargs["window_size"] = max(2, window)
        super().setup(trainer, pl_module, stage)
        peak = device_peak(trainer.strategy.root_device)
        if peak and str(trainer.precision).startswith(("bf16", "16")):  # the table holds half-precision peaks
            for throughput in self._throughputs.values():
                throughput.available_flops = peak
