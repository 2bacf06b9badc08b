"""Test helper (imported by the ``qinyu-lit fit`` subprocess of tests/test_resume.py)."""

import os
import signal

import lightning as L


class KillAt(L.Callback):
    """SIGKILL this process right after training step ``step`` (no cleanup, like a preemption)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
