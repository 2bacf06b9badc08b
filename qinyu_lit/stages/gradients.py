"""Gradient jobs outside the model's maths: the norm under every strategy, its logging, and the
release's loss normalisation by label positions (``loss_normalization: tokens``).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy

from .logged_steps import is_logged_step


def clip_grad_norm(strategy, optimizer: torch.optim.Optimizer, max_norm: float) -> torch.Tensor:
    """Clip the gradients to ``max_norm`` (``inf``: measure only); returns the total norm before clipping.

    FSDP: the root module's own ``clip_grad_norm_``, which reduces the norm over all shards (torch's
    ``clip_grad_norm_`` on a shard would clip by the shard's norm; Lightning's FSDP precision refuses).
    Otherwise torch's ``clip_grad_norm_`` over the optimizer's parameters, as Lightning does. No host read.
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


class GradNormMonitor(L.Callback):
    """``train/grad_norm``: the total gradient norm before clipping, over all shards, on logged steps only."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if is_logged_step(trainer) and not getattr(pl_module, "skipped_step", False):
            pl_module.log("train/grad_norm", clip_grad_norm(trainer.strategy, optimizer, float("inf")))


class TokenNormalizedGradients(L.Callback):
    """The release's normalisation (HF Trainer with ``num_items_in_batch``): the summed losses of every
    micro-batch of an optimizer step, on every rank, divided by the supervised positions of all of them.

    The stage returns each micro-batch's summed loss times the accumulation (Lightning divides by it)
    and counts its positions (host ints from the collate); here, before clipping, the gradients
    (averaged over ranks by DDP/FSDP) are scaled by ranks / positions over all ranks. The count is
    reduced on the device: no host read."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        count = torch.tensor(float(pl_module.window_targets), device=pl_module.device)
        pl_module.window_targets = 0
        if trainer.world_size > 1:
            count = trainer.strategy.reduce(count, reduce_op="sum")
        scale = trainer.world_size / count.clamp(min=1)
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        grad = p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
                        grad.mul_(scale.to(grad.dtype))
