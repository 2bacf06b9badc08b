"""What every training stage shares: build the model, freeze by policy, optimize, log.

A stage subclass only declares which parameters train (``TRAINABLE``, name patterns) and
documents its data. Everything else - Eq. 3 loss, AdamW, warmup + cosine schedule,
TensorBoard scalars - lives here once. The cross-cutting jobs are callbacks every stage adds
(``configure_callbacks``): the non-finite guard (guard.py), data counters (counters.py), the
gradient norm and the release's token normalisation (gradients.py), throughput and MFU (throughput.py).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import DeepSpeedStrategy
from torchmetrics import MeanMetric

from ..codec import DemoRuleCodec, MimiCodec  # the one runtime use of the codecs (validation audio)
from ..data.errors import QinYuError
from ..eval.validation import StageEvaluator
from ..model.config import QinYuConfig
from ..model.flops import FlopShape, flop_shape, training_flops
from ..model.qinyu import LossOutput, QinYuModel, with_pack
from .checkpoints import load_init
from .counters import DataCounters
from .gradients import GradNormMonitor, TokenNormalizedGradients, clip_grad_norm
from .guard import NonFiniteGuard
from .logged_steps import is_logged_step
from .resume import AtomicCheckpointIO, gather_counts, restore_counts
from .run_length import total_optimizer_steps
from .schedule import cosine_with_warmup
from .sharding import shard_fsdp2
from .throughput import PackedThroughputMonitor


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
        min_lr: the LR the cosine ends at (0: to zero; Core-Cocktail recipes: 1e-5, then 1e-6).
        trainable: parameter-name patterns that train; ``None`` uses the stage's declared policy.
        max_nonfinite_steps: NaN/inf losses in a row before the run stops (each one's step is skipped and counted).
        loss_normalization: ``mean``: each micro-batch's loss is its mean over its supervised positions (and
            Lightning averages the micro-batches); ``tokens``: the release's HF Trainer (``num_items_in_batch``):
            the summed losses of all micro-batches and ranks of an optimizer step divided by all their
            supervised positions, so every position weighs the same (docs/stages.md).
        init_from: start from these weights: a previous stage's Lightning checkpoint (``.ckpt``) or a
            directory written by ``qinyu-lit export``. Loaded after the model is built; vocabulary size,
            codebook count and size and speaker dimension must match ``net``. ``None``: ``net`` as built.
        val_generate: sequences greedy-generated per validation/test run, for each kind: speech -> text
            (ASR WER/CER) and speech replies (frames per text token); shown in TensorBoard. 0 = off.
        val_max_new_positions: length limit of those generations (text ids + audio frames); each also
            stops at twice its reference's length + 16.
        val_per_task: per-task loss and accuracy in validation/test (one extra forward pass per batch).
        val_codec: codec to hear generated speech in TensorBoard: a Mimi name or directory
            (``kyutai/mimi``), a dict of ``MimiConfig`` fields, or ``demo`` (the demo's tone decoder,
            ``codec.DemoRuleCodec``); ``None`` logs text only.
    """

    TRAINABLE: tuple[str, ...] = ()
    flops_per_batch: int | None = None  # read by PackedThroughputMonitor after each batch (stages/throughput.py)
    _flop_shape: FlopShape | None = None  # what model/flops.py counts, read before any sharding

    def __init__(
        self,
        net: QinYuConfig,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_ratio: float = 0.03,
        min_lr: float = 0.0,
        trainable: list[str] | None = None,
        init_from: str | None = None,
        max_nonfinite_steps: int = 10,
        loss_normalization: Literal["mean", "tokens"] = "mean",
        val_generate: int = 4,
        val_max_new_positions: int = 256,
        val_per_task: bool = True,
        val_codec: str | dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net_config = net
        self.optimizer_factory = optimizer
        self.warmup_ratio, self.min_lr = warmup_ratio, min_lr
        self.trainable_patterns = list(trainable) if trainable is not None else list(self.TRAINABLE)
        self.init_from = init_from
        self.model: QinYuModel | None = None
        n = net.num_codebooks
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_{m}": MeanMetric() for split in ("val", "test") for m in ["text_acc"] + [f"cb{j}_acc" for j in range(n)]}
        )
        self.max_nonfinite_steps = max_nonfinite_steps
        self.loss_normalization = loss_normalization
        self.window_targets = 0  # supervised positions since the last optimizer step (``tokens`` normalisation)
        self.skipped_step = False  # the last optimizer step was skipped (set by NonFiniteGuard, read by SampleLedger)
        self.nonfinite: torch.Tensor | None = None  # a NaN/inf loss since the last optimizer step (device bool)
        self._data_counts: dict[str, float] = {}  # cumulative per-source samples/tokens and data stats (this rank)
        # validation / test metrics beyond the loss: per task, ASR WER/CER, speech pace (eval/validation.py)
        self.evaluators = torch.nn.ModuleDict(
            {s: StageEvaluator(val_generate, val_max_new_positions, val_per_task) for s in ("val", "test")}
        )
        self.val_codec = val_codec

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
        self._flop_shape = flop_shape(self.model)  # after freezing, before FSDP wraps (and flattens) the parameters
        if self.attached:  # training shows what trains; loading a checkpoint to generate does not
            print(f"[qinyu-lit] {type(self).__name__}: trainable parameters by module\n{format_trainable(summary)}")
        mesh = self.device_mesh  # set by ModelParallelStrategy (FSDP2) before this hook
        if mesh is not None:
            shard_fsdp2(self.model, mesh["data_parallel"], self.trainer.precision)

    @property
    def attached(self) -> bool:
        """Run by a ``Trainer`` (not, e.g., rebuilt from a checkpoint to generate)."""
        try:
            return self.trainer is not None
        except RuntimeError:  # Lightning's public answer to "no trainer"
            return False

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
        # per-source sample/token counts, skipped samples and skipped steps continue after --ckpt_path
        checkpoint["qinyu_counters"] = gather_counts(self._data_counts)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "qinyu_counters" in checkpoint and self.attached:
            self._data_counts = restore_counts(checkpoint["qinyu_counters"], self.trainer.global_rank, self.trainer.world_size)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        refuse_pairs(batch, type(self).__name__)
        out = self.model(batch)  # through forward(): FSDP and DDP hooks run on it
        self._log_step("train", out, batch)  # reads device values on logged steps only
        self.flops_per_batch = self._batch_flops(batch)
        loss = out.loss
        if self.loss_normalization == "tokens":  # TokenNormalizedGradients divides by the step's positions
            self.window_targets += out.num_targets
            loss = out.loss_sum * self.trainer.accumulate_grad_batches  # Lightning divides by it again
        return self.guard_nonfinite(loss)

    def guard_nonfinite(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss to return from ``training_step``. NaN/inf: marked on the device for NonFiniteGuard (no read
        here), and a zero still attached to the graph is returned, so backward and the collectives run on
        every rank and nothing logs the NaN."""
        finite = torch.isfinite(loss.detach())
        self.nonfinite = ~finite if self.nonfinite is None else self.nonfinite | ~finite
        return torch.where(finite, loss, torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0)

    def _batch_flops(self, batch: dict) -> int:
        """The step's work by parameter group (``model/flops.py``), from host-side facts of the batch."""
        if self._flop_shape is None:  # a model set before configure_model
            self._flop_shape = flop_shape(self.model)
        rows, width = batch["input_ids"].shape
        batch = batch if "lengths" in batch else {**batch, "lengths": [[width]] * rows}
        return sum(training_flops(self._flop_shape, with_pack(batch)).values())

    def configure_callbacks(self):
        # in this order: the guard drops a bad step's gradients before anything reads them
        callbacks = [NonFiniteGuard(self.max_nonfinite_steps)]
        callbacks += [TokenNormalizedGradients()] if self.loss_normalization == "tokens" else []
        # tokens/s, FLOP/s and MFU from Lightning's monitor (replaces one given in the recipe)
        return callbacks + [DataCounters(), GradNormMonitor(), PackedThroughputMonitor()]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        refuse_pairs(batch, type(self).__name__)
        out = self.model(batch)  # through forward(): FSDP and DDP hooks run on it
        self._log_step(self._eval_split, out, batch)
        self.evaluators[self._eval_split].step(self, batch, self._eval_split)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)

    @property
    def _eval_split(self) -> str:
        return "test" if self.attached and self.trainer.testing else "val"

    def on_validation_epoch_start(self) -> None:
        evaluator = self.evaluators[self._eval_split]
        if self.val_codec is not None and evaluator.codec is None:
            evaluator.codec = self.load_val_codec()  # not a module: stays out of checkpoints
        evaluator.start(sanity_check=self.attached and self.trainer.sanity_checking)

    def load_val_codec(self):
        """``val_codec`` as a codec: ``demo`` is the demo's tone decoder at the model's codebook sizes."""
        if self.val_codec == "demo":
            return DemoRuleCodec(self.net_config.num_codebooks, self.net_config.codebook_size)
        return MimiCodec(self.val_codec)

    def on_validation_epoch_end(self) -> None:
        self.evaluators[self._eval_split].log_epoch(self, self._eval_split)

    def on_test_epoch_start(self) -> None:
        self.on_validation_epoch_start()

    def on_test_epoch_end(self) -> None:
        self.on_validation_epoch_end()

    def _log_step(self, split: str, out: LossOutput, batch: dict) -> None:
        if split == "train" and not is_logged_step(self.trainer):
            return  # the counts below are device tensors: read them only on steps that are logged
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

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """``trainer.gradient_clip_val`` by norm under every strategy, FSDP included (``clip_grad_norm``);
        the norm is logged by ``GradNormMonitor``."""
        strategy = self.trainer.strategy
        if isinstance(strategy, DeepSpeedStrategy) or (gradient_clip_algorithm or "norm") != "norm":
            # DeepSpeed clips inside its engine; clipping by value: Lightning's own path
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        if gradient_clip_val:
            clip_grad_norm(strategy, optimizer, gradient_clip_val)

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
        total = total_optimizer_steps(self.trainer)
        print(f"[qinyu-lit] {len(decay)} tensors with weight decay, {len(no_decay)} without")
        scheduler = cosine_with_warmup(optimizer, int(self.warmup_ratio * total), total, self.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def refuse_pairs(batch: dict, stage: str) -> None:
    """Preference shards hold a rejected reply too: a stage with the Eq. 3 loss would learn to say it."""
    if "pairs" in batch:
        key = batch["pairs"]["keys"][0]
        raise QinYuError(f"{stage} got preference pairs (sample {key!r} has a rejected reply): "
                         "preference shards are for DPOStage (docs/merge_and_dpo.md)")
