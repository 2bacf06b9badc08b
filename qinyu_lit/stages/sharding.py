"""FSDP2 (``torch.distributed.fsdp.fully_shard``) under Lightning's ``ModelParallelStrategy``.

The strategy builds the device mesh and calls ``configure_model``; the stage then shards the model
here. What is sharded, and in which units (each unit's weights are all-gathered for its forward and
backward, then freed again):

* every decoder layer: a unit of its own, so a step holds one gathered layer at a time;
* the input embeddings: a unit of their own, unless tied to the LM head (Qwen3-1.7B): a tied table stays
  in the root, as one tensor must live in one unit;
* the root unit (the ``QinYuModel``): everything else - the LM head and codebook heads, codebook
  embeddings, adapter, speaker projector, final norm, and the frozen audio encoder. FSDP2 keeps the root
  gathered from its forward to the end of the backward: the chunked loss calls the heads once per chunk
  (and again in the backward), which would otherwise all-gather the ~150K-row LM head each time. The
  encoder cannot be a unit of its own: a rank whose batch holds no user speech does not run it, and a
  unit's all-gather needs every rank (measured: a collective mismatch on 2 CPU ranks); SenseVoiceSmall is
  ~0.23B parameters, gathered once per step with the root.

Mixed precision: where the trainer's precision is bf16 (``bf16-mixed``, ``bf16-true``) the units get
``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``: weights are all-gathered and used in
bf16 (half the traffic of fp32 master weights), gradients reduce-scattered in fp32. Other precisions:
no policy (fp32 everywhere, as on CPU). FSDP2 parameters are DTensors, so gradient clipping is the
ordinary ``torch.nn.utils.clip_grad_norm_`` (Lightning's ``gradient_clip_val`` works) and the norm it
returns is the global one, over all shards.

Works on CPU with gloo (notebook 07, tests/stages/test_fsdp2.py) exactly as on GPUs with nccl.
"""

from __future__ import annotations

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn


def decoder_layers(backbone: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a transformers causal LM (``_no_split_modules`` names their class)."""
    names = set(getattr(backbone, "_no_split_modules", None) or [])
    layers = [m for m in backbone.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(backbone).__name__}: no decoder layer class found to shard (_no_split_modules={names})")
    return layers


def mixed_precision(precision: str | None):
    """The FSDP2 ``MixedPrecisionPolicy`` for a trainer precision: bf16 weights, fp32 reductions, for bf16."""
    if not str(precision).startswith("bf16"):
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def shard_fsdp2(model: nn.Module, mesh, precision: str | None = None) -> None:
    """``fully_shard`` the units of the module docstring over ``mesh`` (1-d, data parallel)."""
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision(precision)
    kwargs = {"mesh": mesh} | ({"mp_policy": policy} if policy is not None else {})
    layers = decoder_layers(model.backbone)
    for layer in layers:
        fully_shard(layer, **kwargs)
    embed, head = model.backbone.get_input_embeddings(), model.backbone.get_output_embeddings()
    own_embed = head is None or getattr(head, "weight", None) is not getattr(embed, "weight", None)
    if own_embed:
        fully_shard(embed, **kwargs)
    fully_shard(model, **kwargs)
    precision = "bf16 weights, fp32 gradient reduction" if policy is not None else "fp32"
    print(f"[qinyu-lit] FSDP2: {len(layers)} decoder-layer units{' + embeddings' if own_embed else ''} + root; {precision}")


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
