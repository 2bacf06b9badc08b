"""Tokens/s and MFU in TensorBoard, measured between logged steps, with one device sync per logged step.

Every stage adds ``PackedThroughputMonitor`` (``QinYuStage.configure_callbacks``). Lightning's own
``ThroughputMonitor`` waits for the device after every micro-batch (``torch.cuda.synchronize``), which
stalls the host's launch-ahead each time; this one counts on the host (real tokens from the batch's
``lengths``, FLOPs from the stage's ``flops_per_batch``) and synchronises only on the steps whose
values are logged, where it hands the totals since the previous logged step to Lightning's
``Throughput`` (the arithmetic of ``ThroughputMonitor``, public in ``lightning.fabric``). Logged:
``train/device/items_per_sec`` (real, non-padding tokens per second on one device),
``train/device/flops_per_sec`` and ``train/device/mfu`` (against the dense bf16 peak of
``model/flops.py``; FLOPs by ``model/flops.py``'s per-group count), plus batches and samples per second.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.fabric.utilities.throughput import Throughput

from ..model.flops import device_peak
from .logged_steps import is_logged_step


def packs_in(batch: dict) -> int:
    return int(batch["input_ids"].shape[0])


def real_tokens(batch: dict) -> int:
    """Non-padding tokens, from the host-side lengths (no device read)."""
    if "lengths" in batch:
        return sum(sum(row) for row in batch["lengths"])
    return int(batch["input_ids"].numel())


class PackedThroughputMonitor(L.Callback):
    """Throughput of packed training batches between logged optimizer steps (see the module docstring)."""

    def __init__(self):
        self.throughput: Throughput | None = None
        self.totals = {"batches": 0, "samples": 0, "lengths": 0}
        self.flops = 0  # since the last update
        self.t0 = 0.0
        self._logged = False
        self._step_at_start = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        peak = device_peak(trainer.strategy.root_device)
        half = str(trainer.precision).startswith(("bf16", "16"))  # the table holds half-precision peaks
        self.throughput = Throughput(available_flops=peak if half else None, world_size=trainer.world_size, window_size=2)
        self._sync(trainer)
        self.t0 = time.perf_counter()
        self.throughput.update(time=0.0, batches=0, samples=0, lengths=0, flops=0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._logged, self._step_at_start = is_logged_step(trainer), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.totals["batches"] += 1
        self.totals["samples"] += packs_in(batch)
        self.totals["lengths"] += real_tokens(batch)
        self.flops += int(getattr(pl_module, "flops_per_batch", None) or 0)
        if not (self._logged and trainer.global_step > self._step_at_start):
            return  # not the end of a logged optimizer step: nothing waits for the device
        self._sync(trainer)  # the one sync: the time then covers every kernel of the interval
        self.throughput.update(time=time.perf_counter() - self.t0, flops=self.flops, **self.totals)
        self.flops = 0
        metrics = self.throughput.compute()
        pl_module.log_dict({f"train/{k}": float(v) for k, v in metrics.items()}, on_step=True, on_epoch=False)

    @staticmethod
    def _sync(trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
