"""What every training stage shares: build the model, freeze by policy, optimize, log.

A stage subclass only declares which parameters train (``TRAINABLE``, name patterns) and
documents its data. Everything else - Eq. 3 loss, AdamW, warmup + cosine schedule,
TensorBoard scalars - lives here once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import time

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torchmetrics import MeanMetric
from transformers import get_cosine_schedule_with_warmup

from ..eval.validation import StageEvaluator
from ..model.config import QinYuConfig
from ..model.qinyu import LossOutput, QinYuModel
from ..prep.codecs import MimiCodec
from .checkpoints import load_init
from .resume import AtomicCheckpointIO
from .sharding import shard_fsdp2


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
        max_nonfinite_steps: NaN/inf losses in a row before the run stops (each one's step is skipped and counted).
        init_from: start from these weights: a previous stage's Lightning checkpoint (``.ckpt``) or a
            directory written by ``qinyu-lit export``. Loaded after the model is built; vocabulary size,
            codebook count and size and speaker dimension must match ``net``. ``None``: ``net`` as built.
        val_generate: sequences greedy-generated per validation/test run, for each kind: speech -> text
            (ASR WER/CER) and speech replies (frames per text token); shown in TensorBoard. 0 = off.
        val_max_new_positions: length limit of those generations (text ids + audio frames); each also
            stops at twice its reference's length + 16.
        val_per_task: per-task loss and accuracy in validation/test (one extra forward pass per batch).
        val_codec: codec to hear generated speech in TensorBoard: a Mimi name or directory
            (``kyutai/mimi``) or a dict of ``MimiConfig`` fields; ``None`` logs text only.
    """

    TRAINABLE: tuple[str, ...] = ()

    def __init__(
        self,
        net: QinYuConfig,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_ratio: float = 0.03,
        trainable: list[str] | None = None,
        init_from: str | None = None,
        max_nonfinite_steps: int = 10,
        val_generate: int = 4,
        val_max_new_positions: int = 256,
        val_per_task: bool = True,
        val_codec: str | dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net_config = net
        self.optimizer_factory = optimizer
        self.warmup_ratio = warmup_ratio
        self.trainable_patterns = list(trainable) if trainable is not None else list(self.TRAINABLE)
        self.init_from = init_from
        self.model: QinYuModel | None = None
        n = net.num_codebooks
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_{m}": MeanMetric() for split in ("val", "test") for m in ["text_acc"] + [f"cb{j}_acc" for j in range(n)]}
        )
        self._last_batch_time: float | None = None
        self.max_nonfinite_steps = max_nonfinite_steps
        self._nonfinite_in_a_row = 0
        self._data_counts: dict[str, float] = {}  # cumulative per-source samples/tokens and data stats (this rank)
        # validation / test metrics beyond the loss: per task, ASR WER/CER, speech pace (eval/validation.py)
        self.evaluators = torch.nn.ModuleDict(
            {s: StageEvaluator(val_generate, val_max_new_positions, val_per_task) for s in ("val", "test")}
        )
        self.val_codec = val_codec
        self._step_tokens = 0

    # ------------------------------------------------------------------ building

    def configure_model(self) -> None:
        """Built here, not in ``__init__``, so FSDP can shard it as it is created."""
        if self.model is not None:
            return
        self.model = QinYuModel(self.net_config)
        if self.init_from:
            load_init(self.model, self.init_from)  # the chain: previous stage -> this one
        self.adapt_model()
        summary = apply_trainable(self.model, self.trainable_patterns)
        print(f"[qinyu-lit] {type(self).__name__}: trainable parameters by module\n{format_trainable(summary)}")
        mesh = getattr(self, "_device_mesh", None)  # set by ModelParallelStrategy (FSDP2) before this hook
        if mesh is not None:
            shard_fsdp2(self.model, mesh["data_parallel"])

    def adapt_model(self) -> None:
        """Hook between loading weights and freezing: a stage that adds parameters (LoRA) adds them here."""

    def setup(self, stage: str) -> None:
        # a kill during a checkpoint write must leave the previous file usable (see resume.py);
        # FSDP/DeepSpeed and user-chosen writers are left alone
        from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # LightningCLI records the class; direct use does not. Rebuilding (export, init_from) needs it.
        hp = checkpoint["hyper_parameters"]
        hp.setdefault("_class_path", f"{type(self).__module__}.{type(self).__qualname__}")
        # plain values only, so the checkpoint loads with weights_only=True (no unpickling of classes)
        if dataclasses.is_dataclass(hp.get("net")):
            hp["net"] = dataclasses.asdict(hp["net"])
        if not isinstance(hp.get("optimizer"), (dict, str, type(None))):
            hp["optimizer"] = getattr(hp["optimizer"], "__qualname__", repr(hp["optimizer"]))

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        out = self.model(batch)  # through forward(): FSDP and DDP hooks run on it
        self._log_data(batch)
        if self._skip_nonfinite(out.loss):
            return None  # Lightning skips backward and the optimizer step (all ranks agree, see above)
        self._log_step("train", out, batch)
        now = time.perf_counter()
        if self._last_batch_time is not None:
            self.log("train/tokens_per_s", float(batch["num_tokens"]) / (now - self._last_batch_time))
        self._last_batch_time = now
        return out.loss

    def _skip_nonfinite(self, loss: torch.Tensor) -> bool:
        """NaN/inf loss: skip the step and count it; stop after ``max_nonfinite_steps`` in a row.
        The ranks agree (one all-reduce) so none of them waits in backward for the others."""
        bad = (~torch.isfinite(loss.detach())).float()
        bad = self.trainer.strategy.reduce(bad, reduce_op="sum") > 0 if self.trainer.world_size > 1 else bool(bad)
        if not bad:
            self._nonfinite_in_a_row = 0
            return False
        self._nonfinite_in_a_row += 1
        self._data_counts["nonfinite_steps"] = self._data_counts.get("nonfinite_steps", 0) + 1
        self.log("train/nonfinite_steps", self._data_counts["nonfinite_steps"])
        print(f"[qinyu-lit] step {self.global_step}: non-finite loss, step skipped "
              f"({self._nonfinite_in_a_row} in a row, limit model.max_nonfinite_steps={self.max_nonfinite_steps})")
        if self._nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise RuntimeError(
                f"{self._nonfinite_in_a_row} non-finite losses in a row at step {self.global_step}: the run is diverging "
                "or the data is broken. Lower the learning rate, check the last batches' keys, or raise "
                "model.max_nonfinite_steps; resume from the last good checkpoint with --ckpt_path last."
            )
        return True

    def _log_data(self, batch: dict) -> None:
        """Pack fill, per-source sample and token counts, and skipped/truncated samples (cumulative, this rank)."""
        if "lengths" not in batch:
            return
        c = self._data_counts
        for row_sources, row_lengths in zip(batch["sources"], batch["lengths"], strict=True):
            for name, n in zip(row_sources, row_lengths, strict=True):
                c[f"samples/{name}"] = c.get(f"samples/{name}", 0) + 1
                c[f"tokens/{name}"] = c.get(f"tokens/{name}", 0) + int(n)
        for k, v in batch.get("data_stats", {}).items():
            c[k] = c.get(k, 0) + int(v)
        self._step_tokens += int(batch["num_tokens"])
        fill = float(batch["num_tokens"]) / batch["input_ids"].numel()
        self.log("data/pack_fill", fill, on_step=True, on_epoch=False)
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:  # cumulative: nothing lost between logs
            for k, v in c.items():
                self.log(f"data/{k}", float(v), on_step=True, on_epoch=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model(batch)  # through forward(): FSDP and DDP hooks run on it
        self._log_step(self._eval_split, out, batch)
        self.evaluators[self._eval_split].step(self, batch, self._eval_split)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    @property
    def _eval_split(self) -> str:
        return "test" if self._trainer is not None and self.trainer.testing else "val"

    def on_validation_epoch_start(self) -> None:
        evaluator = self.evaluators[self._eval_split]
        if self.val_codec is not None and evaluator.codec is None:
            evaluator.codec = MimiCodec(self.val_codec)  # not a module: stays out of checkpoints
        evaluator.start(sanity_check=self._trainer is not None and self.trainer.sanity_checking)

    def on_validation_epoch_end(self) -> None:
        self.evaluators[self._eval_split].log_epoch(self, self._eval_split)

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def _log_step(self, split: str, out: LossOutput, batch: dict) -> None:
        size = int(batch["input_ids"].shape[0])
        values = {f"{split}/loss": out.loss.detach()}
        accuracy = {}  # name -> (metric key, correct, count)
        if out.num_text:
            values[f"{split}/text_loss"] = out.text_loss
            accuracy[f"{split}/text_acc"] = (f"{split}_text_acc", out.text_correct, out.num_text)
        if out.num_audio:
            values[f"{split}/audio_loss"] = out.audio_loss
            for j in range(self.net_config.num_codebooks):
                values[f"{split}_codebook/loss_{j}"] = out.codebook_loss[j]
                accuracy[f"{split}_codebook/acc_{j}"] = (f"{split}_cb{j}_acc", out.codebook_correct[j], out.num_audio)
        if split == "train":
            # this batch's values, in one call: the hot path stays cheap (benchmarks/step_overhead.py)
            values.update({name: correct / count for name, (_, correct, count) in accuracy.items()})
            self.log("train/loss", values.pop("train/loss"), prog_bar=True, on_step=True, on_epoch=False, batch_size=size)
            self.log_dict(values, on_step=True, on_epoch=False, batch_size=size)
            return
        # validation / test: epoch means, accuracies weighted by their position counts (torchmetrics)
        self.log_dict(values, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        for name, (key, correct, count) in accuracy.items():
            self.metrics[key].update(correct / count, weight=count)
            self.log(name, self.metrics[key], on_step=False, on_epoch=True, batch_size=size)

    def on_before_optimizer_step(self, optimizer) -> None:
        # real (non-padding) tokens behind this optimizer step, all ranks assuming equal shares
        self.log("train/tokens_per_optimizer_step", float(self._step_tokens * self.trainer.world_size))
        self._step_tokens = 0
        # grad_norm computes a norm per parameter tensor: only on steps that are logged
        if self.trainer.global_step % self.trainer.log_every_n_steps == 0:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads:  # FSDP2 grads are DTensor shards: get_total_norm reduces over them (the global norm)
                norm = torch.nn.utils.get_total_norm(grads)
                self.log("train/grad_norm", norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    # ------------------------------------------------------------------ optimization

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.model.parameters():
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
