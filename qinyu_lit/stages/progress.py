"""A progress bar in optimizer steps: ``1234/8000`` of ``max_steps``, across epochs and after a resume.

Lightning's ``TQDMProgressBar`` counts the batches of the current epoch and starts again at 0 each
epoch (and at a resume), so a step-based recipe (``max_steps``, many short epochs of streamed shards)
never shows how far the run is. This one shows ``trainer.global_step`` against ``max_steps`` (the
epoch stays in the description); without ``max_steps`` it behaves as Lightning's.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class StepProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` over global optimizer steps (``trainer.global_step / max_steps``).

    Args:
        refresh_rate: redraw every this many steps (0 hides the bar).
        leave: keep each epoch's finished bar on screen.
    """

    def on_train_epoch_start(self, trainer, *args) -> None:
        super().on_train_epoch_start(trainer, *args)
        if trainer.max_steps > 0:
            self._show_steps(trainer)  # where a resumed run stands

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps <= 0:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = trainer.global_step
        if self.train_progress_bar is not None and self._should_update(n, trainer.max_steps):
            self._show_steps(trainer)
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def _show_steps(self, trainer) -> None:
        """Total and position in global steps. Also here, not only at an epoch's start: a run resumed from a
        checkpoint saved mid-epoch (Ctrl-C) continues that epoch without a new ``on_train_epoch_start``."""
        bar = self.train_progress_bar
        bar.total = trainer.max_steps
        bar.n = trainer.global_step
        bar.refresh()
