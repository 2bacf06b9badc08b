"""FSDP2 (``torch.distributed.fsdp.fully_shard``) under Lightning's ``ModelParallelStrategy``.

The strategy builds the device mesh and calls ``configure_model``; the stage then shards the model
here: one FSDP unit per decoder layer (their weights are gathered one layer at a time), the rest
(embeddings, heads, adapter, speaker projector) in the root unit. The frozen audio encoder is sharded
too, so no rank holds a full copy. FSDP2 parameters are DTensors, so gradient clipping is the ordinary
``torch.nn.utils.clip_grad_norm_`` (Lightning's ``gradient_clip_val`` works) and the norm it returns is
the global one, over all shards.

Works on CPU with gloo (notebook 07, tests/stages/test_fsdp2.py) exactly as on GPUs with nccl.
"""

from __future__ import annotations

from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn


def decoder_layers(backbone: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a transformers causal LM (``_no_split_modules`` names their class)."""
    names = set(getattr(backbone, "_no_split_modules", None) or [])
    layers = [m for m in backbone.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(backbone).__name__}: no decoder layer class found to shard (_no_split_modules={names})")
    return layers


def shard_fsdp2(model: nn.Module, mesh) -> None:
    """Apply ``fully_shard`` to every decoder layer, then to the whole model, over ``mesh`` (1-d, data parallel)."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model.backbone):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` as plain FSDP2: every device in one data-parallel group.

    ``ModelParallelStrategy`` defaults to tensor parallelism within a node; QinYu's stages shard with
    FSDP2 only (``shard_fsdp2``), so the data-parallel size is the world size and the tensor-parallel
    size 1, whatever ``devices`` and ``num_nodes`` are.

    Args:
        save_distributed_checkpoint: ``False`` (default) gathers one full checkpoint file on rank 0, which
            ``init_from``, ``qinyu-lit export`` and ``--ckpt_path`` read; ``True`` writes one shard per rank
            (faster at 8B scale, but only this strategy with the same world size reads it back).
    """

    def __init__(self, save_distributed_checkpoint: bool = False, **kwargs):
        super().__init__(save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()
