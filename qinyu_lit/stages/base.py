"""What every training stage shares: build the model, freeze by policy, optimize, log.

A stage subclass only declares which parameters train (``TRAINABLE``, name patterns) and
documents its data. Everything else - Eq. 3 loss, AdamW, warmup + cosine schedule,
TensorBoard scalars - lives here once.
"""

from __future__ import annotations

import fnmatch
import time

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import grad_norm
from torchmetrics import MeanMetric
from transformers import get_cosine_schedule_with_warmup

from ..model.qinyu import LossOutput, QinYuConfig, QinYuModel


def apply_trainable(model: torch.nn.Module, patterns: list[str]) -> dict[str, tuple[int, int]]:
    """Set ``requires_grad`` on whole parameters from name patterns (fnmatch) in one pass.

    Returns {top-level module: (trainable, frozen)} parameter counts for the summary.
    """
    summary: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        train = any(fnmatch.fnmatch(name, p) for p in patterns)
        param.requires_grad_(train)
        counts = summary.setdefault(name.split(".")[0], [0, 0])
        counts[0 if train else 1] += param.numel()
    return {k: (v[0], v[1]) for k, v in summary.items()}


def format_trainable(summary: dict[str, tuple[int, int]]) -> str:
    rows = [f"{'module':<18}{'trainable':>14}{'frozen':>14}"]
    for name, (t, f) in summary.items():
        rows.append(f"{name:<18}{t:>14,}{f:>14,}")
    total_t, total_f = sum(v[0] for v in summary.values()), sum(v[1] for v in summary.values())
    rows.append(f"{'total':<18}{total_t:>14,}{total_f:>14,}")
    return "\n".join(rows)


class QinYuStage(L.LightningModule):
    """Shared base of the QinYu training stages.

    Args:
        net: what to build (backbone, encoder, codebooks, speaker size); see ``QinYuConfig``.
        optimizer: optimizer factory; recipes use AdamW, betas (0.9, 0.95) as in the paper.
        warmup_ratio: share of the run spent in linear warmup before the cosine decay (paper: 3%).
        trainable: parameter-name patterns that train; ``None`` uses the stage's declared policy.
    """

    TRAINABLE: tuple[str, ...] = ()

    def __init__(
        self,
        net: QinYuConfig,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_ratio: float = 0.03,
        trainable: list[str] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net_config = net
        self.optimizer_factory = optimizer
        self.warmup_ratio = warmup_ratio
        self.trainable_patterns = list(trainable) if trainable is not None else list(self.TRAINABLE)
        self.model: QinYuModel | None = None
        n = net.num_codebooks
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_{m}": MeanMetric() for split in ("train", "val") for m in ["text_acc"] + [f"cb{j}_acc" for j in range(n)]}
        )
        self._last_batch_time: float | None = None

    # ------------------------------------------------------------------ building

    def configure_model(self) -> None:
        """Built here, not in ``__init__``, so FSDP can shard it as it is created."""
        if self.model is not None:
            return
        self.model = QinYuModel(self.net_config)
        summary = apply_trainable(self.model, self.trainable_patterns)
        print(f"[qinyu-lit] {type(self).__name__}: trainable parameters by module\n{format_trainable(summary)}")

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model.loss(batch)
        self._log_step("train", out, batch)
        now = time.perf_counter()
        if self._last_batch_time is not None:
            self.log("train/tokens_per_s", float(batch["num_tokens"]) / (now - self._last_batch_time))
        self._last_batch_time = now
        return out.loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model.loss(batch)
        self._log_step("val", out, batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    def _log_step(self, split: str, out: LossOutput, batch: dict) -> None:
        on_step = split == "train"
        size = int(batch["input_ids"].shape[0])
        log = dict(on_step=on_step, on_epoch=not on_step, batch_size=size, sync_dist=not on_step)
        self.log(f"{split}/loss", out.loss.detach(), prog_bar=True, **log)
        if out.num_text:
            self.log(f"{split}/text_loss", out.text_loss, **log)
            m = self.metrics[f"{split}_text_acc"]
            m(out.text_correct / out.num_text, weight=out.num_text)  # forward: batch value + running mean
            self.log(f"{split}/text_acc", m, on_step=on_step, on_epoch=not on_step, batch_size=size)
        if out.num_audio:
            self.log(f"{split}/audio_loss", out.audio_loss, **log)
            for j in range(self.net_config.num_codebooks):
                self.log(f"{split}_codebook/loss_{j}", out.codebook_loss[j], **log)
                m = self.metrics[f"{split}_cb{j}_acc"]
                m(out.codebook_correct[j] / out.num_audio, weight=out.num_audio)
                self.log(f"{split}_codebook/acc_{j}", m, on_step=on_step, on_epoch=not on_step, batch_size=size)

    def on_before_optimizer_step(self, optimizer) -> None:
        norms = grad_norm(self.model, norm_type=2)
        if "grad_2.0_norm_total" in norms:
            self.log("train/grad_norm", norms["grad_2.0_norm_total"])

    # ------------------------------------------------------------------ optimization

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                # matrices decay; biases, norms and 1-d gains do not (as in nanoGPT / HF Trainer)
                (decay if p.ndim >= 2 else no_decay).append(p)
        if not decay and not no_decay:
            raise ValueError(f"{type(self).__name__}: no parameter matches trainable={self.trainable_patterns}")
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
        optimizer = self.optimizer_factory(groups)
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.warmup_ratio * total)
        print(f"[qinyu-lit] {len(decay)} tensors with weight decay, {len(no_decay)} without; "
              f"{warmup} warmup steps then cosine to step {total}")
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
