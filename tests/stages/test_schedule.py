"""Epoch-based runs (``max_epochs`` N, ``max_steps`` -1) get a full warmup + cosine schedule.

A streamed loader has no length, so ``trainer.estimated_stepping_batches`` falls back to
``max_steps`` (-1); the stage takes the epoch length from the data's epoch plan instead.
"""

from __future__ import annotations

import math

import lightning as L
import pytest

from qinyu_lit.stages import SFTStage
from tests.stages.helpers import fit_steps


class _LR(L.Callback):
    def __init__(self):
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.usefixtures("one_thread")
def test_epoch_based_run_follows_one_cosine(demo_dir, tiny_net):
    lrs = _LR()
    stage = SFTStage(tiny_net, warmup_ratio=0.0, val_generate=0)
    trainer = fit_steps(stage, demo_dir, steps=-1, lr=1e-2, max_epochs=2, callbacks=[lrs])
    per_epoch = math.ceil(7 * 4 / 4)  # demo corpus: 7 tasks x 4 samples, batches of 4
    total = 2 * per_epoch
    assert trainer.global_step == total == len(lrs.lrs)
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)]
    assert lrs.lrs == pytest.approx(expected, rel=1e-6)
