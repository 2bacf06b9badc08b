"""The learning-rate schedule every stage shares: linear warmup, then a cosine down to ``min_lr``.

Fun-Audio-Chat's Core-Cocktail needs schedules that end above zero (stage 1: 1e-4 -> 1e-5, stage 2:
1e-5 -> 1e-6); ``min_lr`` 0 is the plain cosine to zero. Built on transformers'
``get_cosine_with_min_lr_schedule_with_warmup`` (a ``LambdaLR``), so checkpoints resume it as before.
"""

from __future__ import annotations

import torch
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, min_lr: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """``warmup`` steps from 0 to the optimizer's LR, then a half cosine reaching ``min_lr`` at step ``total``.

    ``min_lr`` is absolute (the recipes' 1e-5 / 1e-6); every parameter group decays by the same factor,
    so a group with its own LR ends at ``min_lr / lr`` of it.
    """
    lr = optimizer.defaults["lr"]
    if not 0.0 <= min_lr <= lr:
        raise ValueError(f"model.init_args.min_lr {min_lr}: must lie in [0, the optimizer's lr {lr}]")
    print(f"[qinyu-lit] {warmup} warmup steps then cosine to step {total}" + (f", ending at lr {min_lr:g}" if min_lr else ""))
    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, total, min_lr_rate=min_lr / lr if lr else 0.0)  # lr 0: nothing moves
