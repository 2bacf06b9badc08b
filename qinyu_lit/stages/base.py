"""What every training stage shares: build the model, freeze by policy, optimize, log.

A stage subclass only declares which parameters train (``TRAINABLE``, name patterns) and
documents its data. Everything else - Eq. 3 loss, AdamW, warmup + cosine schedule,
TensorBoard scalars - lives here once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from torchmetrics import MeanMetric

from ..codec import MimiCodec
from ..data.mixture import slot_range
from ..eval.validation import StageEvaluator
from ..model.config import QinYuConfig
from ..model.flops import backbone_shape, matmul_parameters, packed_training_flops
from ..model.qinyu import LossOutput, QinYuModel
from .checkpoints import load_init
from .resume import AtomicCheckpointIO, gather_counts, last_good_hint, restore_counts
from .schedule import cosine_with_warmup
from .sharding import shard_fsdp2
from .throughput import PackedThroughputMonitor, real_tokens


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


def clip_grad_norm(strategy, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradients to ``max_norm`` (``inf``: measure only); returns the total norm before clipping.

    FSDP: the root module's own ``clip_grad_norm_``, which reduces the norm over all shards (torch's
    ``clip_grad_norm_`` on a shard would clip by the shard's norm; Lightning's FSDP precision refuses).
    Otherwise torch's ``clip_grad_norm_`` over the optimizer's parameters, as Lightning does.
    """
    if isinstance(strategy, FSDPStrategy):
        from torch.distributed.fsdp import FullyShardedDataParallel

        root = strategy.model
        if not isinstance(root, FullyShardedDataParallel):
            raise TypeError(
                f"FSDP gradient clipping needs the root module wrapped in FullyShardedDataParallel, got {type(root).__name__}"
            )
        return root.clip_grad_norm_(max_norm)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)
    # FSDP2 (FSDP2Strategy): the gradients are DTensor shards and the norm a DTensor reduced over all of them
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


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
    flops_per_batch: int | None = None  # read by ThroughputMonitor after each batch (stages/throughput.py)
    _flops_shape: tuple[int, int, int] | None = None  # (matmul parameters, layers, attention width)

    def __init__(
        self,
        net: QinYuConfig,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        warmup_ratio: float = 0.03,
        min_lr: float = 0.0,
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
        self.warmup_ratio, self.min_lr = warmup_ratio, min_lr
        self.trainable_patterns = list(trainable) if trainable is not None else list(self.TRAINABLE)
        self.init_from = init_from
        self.model: QinYuModel | None = None
        n = net.num_codebooks
        self.metrics = torch.nn.ModuleDict(
            {f"{split}_{m}": MeanMetric() for split in ("val", "test") for m in ["text_acc"] + [f"cb{j}_acc" for j in range(n)]}
        )
        self.max_nonfinite_steps = max_nonfinite_steps
        self._nonfinite_in_a_row = 0
        self._window_nonfinite = False  # a NaN/inf loss since the last optimizer step (this rank)
        self.skipped_step = False  # the last optimizer step was skipped (read by SampleLedger)
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
        self._count_flops_shape()  # before FSDP wraps (and flattens) the parameters
        if self._trainer is not None:  # training shows what trains; loading a checkpoint to generate does not
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
        # per-source sample/token counts, skipped samples and skipped steps continue after --ckpt_path
        checkpoint["qinyu_counters"] = gather_counts(self._data_counts)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "qinyu_counters" in checkpoint and self._trainer is not None:
            self._data_counts = restore_counts(checkpoint["qinyu_counters"], self.trainer.global_rank, self.trainer.world_size)

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.model(batch)  # through forward(): FSDP and DDP hooks run on it
        self._log_data(batch)
        if not torch.isfinite(out.loss.detach()):
            # never None (DDP/FSDP cannot skip a rank's step): a zero loss still attached to the graph,
            # so backward runs on every rank; ``optimizer_step`` then skips the update on all of them
            self._window_nonfinite = True
            return torch.nan_to_num(out.loss, nan=0.0, posinf=0.0, neginf=0.0) * 0.0
        self._log_step("train", out, batch)
        self.flops_per_batch = self._batch_flops(batch)
        return out.loss

    def _count_flops_shape(self) -> None:
        self._flops_shape = (matmul_parameters(self.model), *backbone_shape(self.model.backbone))

    def _batch_flops(self, batch: dict) -> int:
        """6N + attention within samples (model/flops.py), from host-side lengths."""
        if self._flops_shape is None:  # a model set before configure_model
            self._count_flops_shape()
        rows, width = batch["input_ids"].shape
        lengths = [n for row in batch["lengths"] for n in row] if "lengths" in batch else [width] * rows
        return packed_training_flops(self._flops_shape[0], lengths, *self._flops_shape[1:])

    def configure_callbacks(self):
        # tokens/s, FLOP/s and MFU from Lightning's monitor (replaces one given in the recipe)
        return [PackedThroughputMonitor()]

    @property
    def _logging_step(self) -> bool:
        """This step's values reach the logger (Lightning's own test, so nothing is read for nothing)."""
        return self.trainer._logger_connector.should_update_logs

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer, optimizer_closure=None) -> None:
        """Runs the closure (training_step + backward) itself, then steps only if every rank's losses
        since the last step were finite: the ranks agree through one all-reduce, so all skip together."""
        loss = optimizer_closure()
        if self._skip_nonfinite():
            optimizer.zero_grad(set_to_none=True)  # the skipped step's gradients never reach the weights
            self.skipped_step = True
            return
        self.skipped_step = False
        optimizer.step(closure=lambda: loss)  # clipping and on_before_optimizer_step run inside, as usual

    def _skip_nonfinite(self) -> bool:
        """NaN/inf loss on any rank: skip the step and count it; stop after ``max_nonfinite_steps`` in a row."""
        bad = torch.tensor(float(self._window_nonfinite), device=self.device)
        self._window_nonfinite = False
        if self.trainer.world_size > 1:
            bad = self.trainer.strategy.reduce(bad, reduce_op="sum")
        if not bool(bad > 0):
            self._nonfinite_in_a_row = 0
            return False
        self._nonfinite_in_a_row += 1
        self._data_counts["nonfinite_steps"] = self._data_counts.get("nonfinite_steps", 0) + 1
        self.log("train/nonfinite_steps", float(self._data_counts["nonfinite_steps"]))
        print(f"[qinyu-lit] step {self.global_step}: non-finite loss, step skipped on every rank "
              f"({self._nonfinite_in_a_row} in a row, limit model.max_nonfinite_steps={self.max_nonfinite_steps})")
        if self._nonfinite_in_a_row >= self.max_nonfinite_steps:
            raise RuntimeError(
                f"{self._nonfinite_in_a_row} non-finite losses in a row at step {self.global_step}: the run is diverging "
                "or the data is broken. Lower the learning rate, check the last batches' keys, or raise "
                f"model.max_nonfinite_steps; {last_good_hint(self.trainer)}"
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
        tokens = real_tokens(batch)  # host-side lengths: no device read
        self._step_tokens += tokens
        fill = tokens / batch["input_ids"].numel()
        self.log("data/pack_fill", fill, on_step=True, on_epoch=False)
        if self._logging_step:  # cumulative counts, so nothing is lost between logged steps
            for k, v in c.items():
                self.log(f"data/{k}", float(v), on_step=True, on_epoch=False)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.model(batch)  # through forward(): FSDP and DDP hooks run on it
        self._log_step(self._eval_split, out, batch)
        self.evaluators[self._eval_split].step(self, batch, self._eval_split)
        self.flops_per_batch = self._batch_flops(batch) // 3  # forward only

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
        if split == "train" and not self._logging_step:
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

    def on_before_optimizer_step(self, optimizer) -> None:
        # real (non-padding) tokens behind this optimizer step, all ranks assuming equal shares
        self.log("train/tokens_per_optimizer_step", float(self._step_tokens * self.trainer.world_size))
        self._step_tokens = 0

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """``trainer.gradient_clip_val`` by norm under every strategy, FSDP included (``clip_grad_norm``),
        and ``train/grad_norm``: the total norm before clipping, over all shards, on logged steps."""
        strategy = self.trainer.strategy
        if isinstance(strategy, DeepSpeedStrategy) or (gradient_clip_algorithm or "norm") != "norm":
            # DeepSpeed clips inside its engine; clipping by value: Lightning's own path
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        logged = self._logging_step
        if gradient_clip_val or logged:
            norm = clip_grad_norm(strategy, optimizer, gradient_clip_val or float("inf"))
            if logged:
                self.log("train/grad_norm", norm)

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
        total = self._total_steps()
        print(f"[qinyu-lit] {len(decay)} tensors with weight decay, {len(no_decay)} without")
        scheduler = cosine_with_warmup(optimizer, int(self.warmup_ratio * total), total, self.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _total_steps(self) -> int:
        """Optimizer steps in the run, for the schedule. ``trainer.estimated_stepping_batches`` needs the
        loader's length, which a streamed (iterable) loader does not have; for an epoch-based run
        (``max_epochs`` N, ``max_steps`` -1) the epoch length comes from the data's epoch plan instead."""
        trainer = self.trainer
        total = trainer.estimated_stepping_batches
        epochs = trainer.max_epochs
        if epochs in (None, -1) or not math.isinf(trainer.num_training_batches):
            if total in (-1, math.inf):
                raise ValueError("set --trainer.max_steps (or --trainer.max_epochs): the schedule needs a run length")
            return int(total)
        loader = trainer.train_dataloader
        if not hasattr(loader, "stream"):
            raise ValueError("epoch-based run with a loader of unknown length: set --trainer.max_steps")
        batches = planned_epoch_batches(loader.stream, trainer.world_size, loader.num_workers)
        per_epoch = math.ceil(batches / trainer.accumulate_grad_batches)
        total = per_epoch * epochs if trainer.max_steps == -1 else min(per_epoch * epochs, trainer.max_steps)
        print(f"[qinyu-lit] epoch plan: {batches} batches per rank = {per_epoch} optimizer steps per epoch x {epochs} epochs")
        return total


def planned_epoch_batches(stream, world_size: int, num_workers: int) -> int:
    """Batches every rank runs in one epoch, from the epoch plan: each slot (rank x worker) ships
    ceil(items / batch_size) batches, and the ranks stop together at the smallest total (StreamLoader).
    Exact unless samples are skipped as bad data (then the schedule ends a few steps late)."""
    if stream.pack_length is not None:
        raise ValueError(
            "epoch-based run with packing (data.pack_length): the number of packs per epoch is only known after "
            "reading every sample; set --trainer.max_steps instead of --trainer.max_epochs"
        )
    nw = max(num_workers, 1)
    shard, _ = stream.catalog.plan(stream.seed, 0, stream.shuffle)
    slots = world_size * nw
    per_rank = []
    for rank in range(world_size):
        sizes = [hi - lo for lo, hi in (slot_range(len(shard), rank * nw + w, slots) for w in range(nw))]
        per_rank.append(sum(math.ceil(n / stream.batch_size) for n in sizes))
    return min(per_rank)
