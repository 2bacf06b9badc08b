"""Training FLOPs of a packed batch, per parameter group, and the dense peaks they are measured against (MFU).

One function, ``training_flops(model, batch)``, used by the stages' throughput monitor, the GPU benchmark
and docs/benchmarks.md. It counts the work the step does, by parameter group (matrices only: embedding
lookups, norms and biases are not matmuls):

* backbone matrices, at every real token: 6 per trainable weight (forward 2, input gradient 2, weight
  gradient 2), 4 per frozen one (no weight gradient; the input gradient still flows to what trains
  below it: the adapter in stage 0, LoRA in stage 3). A LoRA layer is therefore 4N for its base + 6N for
  its adapters;
* the LM head, its codebook-0 extension and the codebook heads only at the supervised positions, the
  only ones that reach them (the chunked loss), 6 or 4 by the same rule;
* attention within each sample: 6 L d sum(s_i^2) (causal QK^T and AV, 2 s^2 d forward, x3 with the
  backward, which is all input gradient);
* the adapter and speaker projector at their frames / vectors (6 if trainable, else 2: nothing below
  them trains);
* the frozen audio encoder's forward: 2 per matrix weight per (padded) input frame plus its bidirectional
  attention 4 L d T^2 per clip. Counted, because the step runs it.

``forward_flops`` counts a forward pass alone (DPO's reference model runs one per step). Padding tokens are not counted. The chunked loss recomputes the heads' forward in the backward (its
checkpointing): not counted, it is overhead, not model work.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _matrices(module: nn.Module, skip: set[int] = frozenset()) -> tuple[int, int]:
    """(trainable, frozen) elements of the matmul weights (>= 2-d, not embedding tables) of ``module``."""
    tables = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    counts = [0, 0]
    for p in module.parameters():
        if p.ndim >= 2 and id(p) not in tables and id(p) not in skip:
            counts[0 if p.requires_grad else 1] += p.numel()
    return counts[0], counts[1]


def _heads(model: nn.Module) -> list[nn.Module]:
    heads = [model.backbone.get_output_embeddings()]
    return heads + ([model.code0_head, model.code_heads] if getattr(model, "shared", None) is None else [])


@dataclass(frozen=True)
class FlopShape:
    """What the count needs of a model, read once before any sharding (FSDP flattens the parameters)."""

    backbone: tuple[int, int]  # (trainable, frozen) matrix elements outside the heads
    heads: tuple[int, int]  # LM head (+ codebook-0 extension and codebook heads)
    speaker_proj: tuple[int, int]
    adapter: tuple[int, int]
    encoder: int  # frozen audio encoder matrix elements (0: none)
    layers: int
    attn_width: int  # query heads x head dim
    encoder_layers: int = 0
    encoder_width: int = 0
    encoder_kind: str = "fun_asr_nano"
    whisper_window: int = 0


def flop_shape(model: nn.Module) -> FlopShape:
    heads = _heads(model)
    tied = {id(model.backbone.get_output_embeddings().weight)}
    head_ids = {id(p) for h in heads for p in h.parameters()}
    layers, width = backbone_shape(model.backbone)
    enc = getattr(model, "audio_encoder", None)
    extra = {}
    if enc is not None:
        cfg = enc.config
        extra = dict(
            encoder_layers=getattr(cfg, "num_hidden_layers", None) or cfg.encoder_layers,
            encoder_width=getattr(cfg, "d_model", None) or cfg.hidden_size,
            encoder_kind=model.config.audio_encoder_type, whisper_window=getattr(cfg, "max_source_positions", 0),
        )  # fmt: skip
    return FlopShape(
        backbone=_matrices(model.backbone, head_ids),
        heads=tuple(sum(x) for x in zip(*(_counts_of(h, tied) for h in heads), strict=True)),
        speaker_proj=_matrices(model.speaker_proj),
        adapter=_matrices(model.adapter) if enc is not None else (0, 0),
        encoder=sum(_matrices(enc)) if enc is not None else 0,
        layers=layers, attn_width=width, **extra,
    )  # fmt: skip


def training_flops(shape: FlopShape, batch: dict) -> dict[str, int]:
    """Forward + backward FLOPs of one micro-batch by group (module docstring), from the batch's host-side
    facts (``lengths``, ``batch["pack"]``, tensor shapes): no device read. Sum the values for the total."""
    lengths = [n for row in batch["lengths"] for n in row]
    pack = batch["pack"]
    out = {
        "backbone": (6 * shape.backbone[0] + 4 * shape.backbone[1]) * sum(lengths),
        "heads": (6 * shape.heads[0] + 4 * shape.heads[1]) * pack["sup_index"].shape[0],
        "attention": 6 * shape.layers * shape.attn_width * sum(n * n for n in lengths),
        "projections": _small(shape.speaker_proj, batch["speakers"].shape[0] if "speakers" in batch else 0),
        "encoder": 0,
    }
    if shape.encoder and pack["clip_frames"]:
        out["projections"] += _small(shape.adapter, sum(_encoder_outputs(shape.encoder_kind, pack["clip_frames"])))
        clips, frames = batch["audio_features"].shape[:2]
        frames = shape.whisper_window if shape.encoder_kind == "whisper" else frames  # its fixed window
        attention = 4 * shape.encoder_layers * shape.encoder_width * clips * frames**2
        out["encoder"] = 2 * shape.encoder * clips * frames + attention
    return out


def forward_flops(shape: FlopShape, batch: dict) -> int:
    """One forward pass of the same micro-batch, nothing trained (DPO's reference model): 2 per matrix
    weight per token or supervised position, causal attention 2 L d sum(s_i^2), the encoder as above."""
    lengths = [n for row in batch["lengths"] for n in row]
    total = 2 * sum(shape.backbone) * sum(lengths) + 2 * sum(shape.heads) * batch["pack"]["sup_index"].shape[0]
    total += 2 * shape.layers * shape.attn_width * sum(n * n for n in lengths)
    return total + training_flops(shape, batch)["encoder"]


def _counts_of(module: nn.Module, tied: set[int]) -> tuple[int, int]:
    """Like ``_matrices`` but a weight tied to the input table (Qwen3-1.7B's lm_head) still counts."""
    counts = [0, 0]
    for p in module.parameters():
        if p.ndim >= 2 and (id(p) in tied or not isinstance(module, nn.Embedding)):
            counts[0 if p.requires_grad else 1] += p.numel()
    return counts[0], counts[1]


def _small(counts: tuple[int, int], rows: int) -> int:
    trainable, frozen = counts
    return (6 if trainable else 2) * (trainable + frozen) * rows


def _encoder_outputs(kind: str, clip_frames: list[int]) -> list[int]:
    if kind == "whisper":
        return [(n + 1) // 2 for n in clip_frames]
    return [n + 4 for n in clip_frames] if kind == "sense_voice" else list(clip_frames)


def backbone_shape(backbone: nn.Module) -> tuple[int, int]:
    """(layers, query heads x head dim) of a transformers causal LM."""
    cfg = backbone.config.get_text_config()
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return cfg.num_hidden_layers, cfg.num_attention_heads * head_dim


def device_peak(device: torch.device) -> float | None:
    return dense_bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
