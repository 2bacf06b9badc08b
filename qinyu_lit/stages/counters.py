"""Data counters in TensorBoard: pack fill, per-source samples and tokens, skipped samples, tokens per step.

All from the batch's host-side lists (``lengths``, ``sources``, ``data_stats``): nothing is read from
the device. Cumulative counts live in the stage's ``_data_counts`` (checkpointed with it, so they
continue after ``--ckpt_path``) and are written on logged steps only, so none is lost in between.
"""

from __future__ import annotations

import lightning as L

from ..data.layout import is_rejected_key
from .logged_steps import is_logged_step
from .throughput import real_tokens


class DataCounters(L.Callback):
    """``data/pack_fill`` per batch, ``data/*`` cumulative counts, ``train/tokens_per_optimizer_step``."""

    def __init__(self):
        self.step_tokens = 0  # real tokens since the last optimizer step (this rank)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if "lengths" not in batch:
            return
        c = pl_module._data_counts
        for row_sources, row_lengths, row_keys in zip(batch["sources"], batch["lengths"], batch["keys"], strict=True):
            for name, n, key in zip(row_sources, row_lengths, row_keys, strict=True):
                # a preference pair is one sample: its rejected twin adds tokens only
                c[f"samples/{name}"] = c.get(f"samples/{name}", 0) + (not is_rejected_key(key))
                c[f"tokens/{name}"] = c.get(f"tokens/{name}", 0) + int(n)
        for k, v in batch.get("data_stats", {}).items():
            c[k] = c.get(k, 0) + int(v)
        tokens = real_tokens(batch)
        self.step_tokens += tokens
        pl_module.log("data/pack_fill", tokens / batch["input_ids"].numel(), on_step=True, on_epoch=False)
        if is_logged_step(trainer):
            for k, v in c.items():
                pl_module.log(f"data/{k}", float(v), on_step=True, on_epoch=False)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # every optimizer step, skipped ones too (their tokens were read): all ranks assumed equal
        pl_module.log("train/tokens_per_optimizer_step", float(self.step_tokens * trainer.world_size))
        self.step_tokens = 0
