"""Which training steps reach the logger, from public trainer state (no private Lightning names).

Lightning writes step values when the optimizer steps done so far + 1 is a multiple of
``log_every_n_steps`` (and when the run is stopping). From ``on_train_batch_start`` to the end of
``training_step`` and in ``on_before_optimizer_step`` the optimizer step being made is
``trainer.global_step`` (it grows after ``optimizer.step``), so the same rule reads as below. Device values
(losses, accuracies, the gradient norm) are read only on such steps: each read is a sync on a GPU.
"""

from __future__ import annotations


def is_logged_step(trainer) -> bool:
    """True while training the optimizer step whose values Lightning will log."""
    every = trainer.log_every_n_steps
    return bool(every) and ((trainer.global_step + 1) % every == 0 or trainer.should_stop)
