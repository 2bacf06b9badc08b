"""Surviving preemption: atomic checkpoint files and a per-step record of the samples trained on.

* ``AtomicCheckpointIO`` - Lightning's ``TorchCheckpointIO`` writes the file in place, so a
  kill during the write leaves a truncated ``last.ckpt`` and nothing to resume from. This one
  writes ``<path>.partial`` next to it and renames it over the old file (``os.replace`` is
  atomic on POSIX): the previous checkpoint stays usable until the new one is complete.
  ``QinYuStage`` installs it automatically when the strategy uses the plain torch writer.
* ``SampleLedger`` - a callback writing one JSON line per training batch (step, loss, sample
  keys): the audit trail that shows which samples a run saw, and what the resume test compares.

The data stream's own position lives in ``QinYuDataModule.state_dict`` (see ``data/datamodule.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes to ``<path>.partial`` and renames it into place (local paths)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        fs = get_filesystem(path)
        if "file" not in fs.protocol:  # object stores replace whole objects already
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        partial = path.with_name(path.name + ".partial")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)
        finally:
            if partial.exists():
                partial.unlink()


class SampleLedger(L.Callback):
    """One JSON line per training batch: ``{"step", "epoch", "loss", "keys"}``.

    Args:
        path: the file (rank ``r`` > 0 writes ``<path>.rank<r>``); appended to, so a resumed
            run continues the same ledger.
    """

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        rank = trainer.global_rank
        path = self.path if rank == 0 else f"{self.path}.rank{rank}"
        row = {
            "step": trainer.global_step,
            "loss": None if loss is None else float(loss),
            "keys": [k for row in batch.get("keys", []) for k in row],
        }
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
