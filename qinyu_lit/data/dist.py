"""Where this process stands among the ranks, and the CPU group for the loader's tiny collectives.

The one place that asks ``torch.distributed``: the stream (which slot a worker reads), the data
module (equal batch counts, the stream position in checkpoints) and the checkpoint code (counters
gathered from every rank, one NaN-stop message) all use these two functions.
"""

from __future__ import annotations

import torch.distributed as dist

_GLOO_GROUP = None


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def cpu_group():
    """A gloo group for small CPU collectives (works beside NCCL); ``None`` (the default group) under gloo."""
    global _GLOO_GROUP
    if dist.get_backend() == "gloo":
        return None
    if _GLOO_GROUP is None:
        _GLOO_GROUP = dist.new_group(backend="gloo")
    return _GLOO_GROUP


def all_gather_objects(obj) -> list:
    """Every rank's ``obj`` (a collective: all ranks call it); ``[obj]`` outside a distributed run."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    everyone = [None] * world
    dist.all_gather_object(everyone, obj, group=cpu_group())
    return everyone
