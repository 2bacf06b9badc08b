"""The run's length in optimizer steps, for the learning-rate schedule (``QinYuStage.configure_optimizers``).

``trainer.estimated_stepping_batches`` needs the loader's length, which a streamed (iterable) loader
does not have; for an epoch-based run (``max_epochs`` N, ``max_steps`` -1) the epoch length comes from
the data's epoch plan instead (``planned_epoch_batches``).
"""

from __future__ import annotations

import math

from ..data.mixture import slot_range


def total_optimizer_steps(trainer) -> int:
    """Optimizer steps in the run (see the module docstring)."""
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
