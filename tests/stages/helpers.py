"""Small shared pieces of the stage tests: run a stage a few optimizer steps on the demo corpus."""

from __future__ import annotations

import lightning as L
import torch

from qinyu_lit.data.datamodule import QinYuDataModule


def demo_data(demo_dir, batch_size: int = 4, train=None) -> QinYuDataModule:
    """The demo corpus's tokenizer; its own train shards or ``train`` (e.g. persona shards)."""
    return QinYuDataModule(
        train=str(train or demo_dir / "train"), tokenizer=str(demo_dir / "tokenizer"), codebook_size=64,
        batch_size=batch_size, num_workers=0, shuffle_buffer=0,
    )  # fmt: skip


def fit_steps(stage, demo_dir, steps: int = 3, lr: float = 1e-2, train=None, **trainer_kwargs) -> L.Trainer:
    """A few AdamW steps on CPU; ``stage.optimizer_factory`` is replaced so the LR is known."""
    stage.optimizer_factory = lambda groups: torch.optim.AdamW(
        groups, lr=lr, betas=(0.9, 0.95), weight_decay=0.1
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, **trainer_kwargs,
    )  # fmt: skip
    trainer.fit(stage, datamodule=demo_data(demo_dir, train=train))
    return trainer
