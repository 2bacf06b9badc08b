"""The non-finite loss guard: a NaN/inf loss on any rank skips that optimizer step on every rank.

The stage's ``training_step`` marks a non-finite loss on the device (``pl_module.nonfinite``: no read)
and returns a zero still attached to the graph, so backward and DDP/FSDP's collectives run on every
rank. Once per optimizer step the flags of all micro-batches and ranks are combined by one reduction and read on the host: the
step's one sync. The trade-off: a guard without any read would have to make the update conditional
inside the optimizer (GradScaler's ``found_inf`` machinery); one read after the backward costs the host
a short wait once per optimizer step (not per micro-batch) and keeps any optimizer usable. A skipped step
drops its gradients (``zero_grad(set_to_none=True)``: AdamW then leaves every weight and its moments
untouched), is counted in ``train/nonfinite_steps``, and ``max_nonfinite_steps`` in a row stop the run.
"""

from __future__ import annotations

import lightning as L
import torch

from .resume import last_good_hint


class NonFiniteGuard(L.Callback):
    """Skip the optimizer step after a NaN/inf loss (all ranks together); stop after ``max_in_a_row``."""

    def __init__(self, max_in_a_row: int = 10):
        self.max_in_a_row = max_in_a_row
        self.in_a_row = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        flag = pl_module.nonfinite  # set by training_step since the last optimizer step (device bool)
        bad = torch.zeros((), device=pl_module.device) if flag is None else flag.float()
        pl_module.nonfinite = None
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce(bad, reduce_op="sum")
        pl_module.skipped_step = bool(bad > 0)  # the one host read of the step (read by SampleLedger too)
        if not pl_module.skipped_step:
            self.in_a_row = 0
            return
        optimizer.zero_grad(set_to_none=True)  # the skipped step's gradients never reach the weights
        self.in_a_row += 1
        counts = pl_module._data_counts
        counts["nonfinite_steps"] = counts.get("nonfinite_steps", 0) + 1
        pl_module.log("train/nonfinite_steps", float(counts["nonfinite_steps"]))
        step = trainer.global_step
        print(f"[qinyu-lit] step {step}: non-finite loss, step skipped on every rank "
              f"({self.in_a_row} in a row, limit model.max_nonfinite_steps={self.max_in_a_row})")  # fmt: skip
        if self.in_a_row >= self.max_in_a_row:
            raise RuntimeError(
                f"{self.in_a_row} non-finite losses in a row at step {step}: the run is diverging "
                "or the data is broken. Lower the learning rate, check the last batches' keys, or raise "
                f"model.max_nonfinite_steps; {last_good_hint(trainer)}"
            )
