"""Training FLOPs of a packed batch and the dense peaks they are measured against (MFU).

FLOPs = 6 N T + 6 L d sum(s_i^2): 6 per parameter per token (forward 2, backward 4) for the
N parameters every token meets in a matmul, plus the causal attention scores and their use,
within each sample only (QK^T and AV are 2 s^2 d each in the forward, half of it causal, x3 with
the backward). Padding and the frozen audio encoder are not counted. A LoRA stage is also counted
at 6N (its frozen weights need no weight gradient, so the real work is nearer 4N): the figure is
the usual one to compare MFU with, not the exact work.
"""

from __future__ import annotations

import torch
from torch import nn

# dense (not 2:4 sparse) bf16/fp16 tensor-core peaks, FLOP/s, from the vendors' datasheets;
# checked in order, first substring of the lower-cased device name wins
DENSE_BF16_PEAK = (
    ("h100 nvl", 835e12),
    ("h100 pcie", 756e12),
    ("h200 nvl", 835e12),
    ("gh200", 989.4e12),
    ("h200", 989.4e12),
    ("h100", 989.4e12),  # SXM / HBM3
    ("h800", 989.4e12),
    ("b200", 2250e12),
    ("a100", 312e12),
    ("a800", 312e12),
    ("l40s", 362e12),
    ("l4", 121e12),
)


def dense_bf16_peak(device_name: str) -> float | None:
    """The dense bf16 peak of a device by its name (``torch.cuda.get_device_name()``), ``None`` if unknown."""
    name = device_name.lower()
    return next((peak for key, peak in DENSE_BF16_PEAK if key in name), None)


def matmul_parameters(model: nn.Module) -> int:
    """Parameters a token meets in a matmul: all of them except embedding tables (a lookup; a table
    tied to the LM head counts once) and the frozen audio encoder (audio frames, forward only)."""
    skip = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    backbone = getattr(model, "backbone", None)
    head = backbone.get_output_embeddings() if backbone is not None else None
    if head is not None:  # tied to the input table (Qwen3-1.7B) it is still the LM head's matmul
        skip.discard(id(head.weight))
    encoder = getattr(model, "audio_encoder", None)
    if encoder is not None:
        skip |= {id(p) for p in encoder.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def packed_training_flops(num_params: int, lengths: list[int], num_layers: int, attn_width: int) -> int:
    """Forward + backward FLOPs of one packed micro-batch: ``lengths`` are its samples' token counts
    (``batch["lengths"]`` flattened), ``attn_width`` = heads x head dim."""
    tokens = sum(lengths)
    return 6 * num_params * tokens + 6 * num_layers * attn_width * sum(n * n for n in lengths)


def backbone_shape(backbone: nn.Module) -> tuple[int, int]:
    """(layers, query heads x head dim) of a transformers causal LM."""
    cfg = backbone.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers, cfg.num_attention_heads * head_dim


def device_peak(device: torch.device) -> float | None:
    return dense_bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
