"""``qinyu_varlen``: packed-sample attention on torch's own varlen flash kernel, nothing to install.

A 10K-token pack holds many samples of a few hundred tokens. ``sdpa`` under transformers'
block-diagonal mask computes the whole 10K x 10K square and throws most of it away; a varlen
kernel computes only the causal triangle of each sample. torch >= 2.10 ships one
(``torch.nn.attention.varlen.varlen_attn``, the flash kernel behind sdpa), so packed training
needs no flash-attn wheel. It is registered with transformers as one more attention
implementation (``AttentionInterface``), so the Qwen3 modules stay as they are.

The sample boundaries (cumulative lengths) are computed on the host by the collate (``batch["pack"]``,
``data/batch.py``), passed by ``QinYuModel.hidden_states`` through ``packed_attention_kwargs``, and reach
every layer through the decoder's keyword arguments - the same ``cu_seq_lens_q`` / ``max_length_q``
names transformers' flash-attention path reads, so ``flash_attention_2/3`` get them too.
Without them (generation with a KV cache, a direct backbone call) ``qinyu_varlen`` is plain
``sdpa`` with the mask transformers builds, which is why its mask function is sdpa's.
"""

from __future__ import annotations

import inspect
import warnings

import torch
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

VARLEN = "qinyu_varlen"
AUTO = "auto"

try:  # torch >= 2.10
    from torch.nn.attention.varlen import varlen_attn
except ImportError:  # older torch: the per-sample sdpa reference below still gives the right result
    varlen_attn = None
_VARLEN_ARGS = set(inspect.signature(varlen_attn).parameters) if varlen_attn is not None else set()
_VARLEN_GQA = "enable_gqa" in _VARLEN_ARGS
# causal: window_size=(-1, 0) where the kernel takes a window, else the is_causal flag of earlier releases
_CAUSAL = {"window_size": (-1, 0)} if "window_size" in _VARLEN_ARGS else {"is_causal": True}
_HALF = (torch.float16, torch.bfloat16)


def resolve_attn_implementation(name: str) -> str:
    """``auto``: ``qinyu_varlen`` where a CUDA device and torch's varlen kernel exist, else ``sdpa``
    (the CPU path). Any other name (``sdpa``, ``eager``, ``flash_attention_2``, ...) is kept."""
    if name != AUTO:
        return name
    return VARLEN if varlen_attn is not None and torch.cuda.is_available() else "sdpa"


def cu_seqlens_from_position_ids(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Rows of restarting positions -> (cumulative lengths [n_segments + 1] int32, longest segment).

    The rows are flattened end to end; a segment starts at each row start and wherever a position
    is not its predecessor + 1 (a padding tail restarts at 0 too, so it is a segment of its own).
    Read on the host once: the kernel needs the longest length as a Python int anyway.
    """
    pos = position_ids.detach().to("cpu", torch.long)
    pos = pos[None] if pos.ndim == 1 else pos
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    begin = starts.reshape(-1).nonzero().flatten()
    cu = torch.cat([begin, torch.tensor([pos.numel()])]).to(torch.int32)
    return cu.to(position_ids.device), int((cu[1:] - cu[:-1]).max())


def uses_packed_kwargs(attn_implementation: str) -> bool:
    """Implementations that take precomputed sample boundaries instead of a mask."""
    return attn_implementation == VARLEN or attn_implementation.startswith("flash_attention")


def packed_attention_kwargs(config, position_ids: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int) -> dict:
    """Decoder keyword arguments for one packed forward, from the collate's host-side facts (``batch["pack"]``).

    varlen / flash: the boundaries for every layer and a prepared (empty) mask per layer type, so
    transformers builds no mask. sdpa: the block-diagonal causal mask built here on the device from the
    restarting ``position_ids``; transformers' own packed-sequence detection would otherwise read the
    device twice per forward (``find_packed_sequence_indices`` asks ``.all()`` of a device tensor, and
    the mask builder may skip the mask on a host-side check). Same mask, no host read. ``{}`` otherwise
    (eager, sliding-window layers: transformers' path).
    """
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    if uses_packed_kwargs(config._attn_implementation):
        return dict(
            attention_mask={t: None for t in layer_types},
            cu_seq_lens_q=cu_seqlens, cu_seq_lens_k=cu_seqlens, max_length_q=max_len, max_length_k=max_len,
        )  # fmt: skip
    if config._attn_implementation == "sdpa" and layer_types == {"full_attention"}:
        return dict(attention_mask={"full_attention": block_causal_mask(position_ids)})
    return {}


def block_causal_mask(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, W] restarting positions -> [B, 1, W, W] bool (True: may attend), causal within each sample:
    a sample starts wherever a position is not its predecessor + 1 (the padding tail too)."""
    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    sample = starts.cumsum(-1)
    width = position_ids.shape[-1]
    causal = torch.ones(width, width, dtype=torch.bool, device=position_ids.device).tril()
    return ((sample[:, :, None] == sample[:, None, :]) & causal)[:, None]


def segment_sdpa(q, k, v, cu_seqlens: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Reference kernel: causal sdpa on each sample alone. [total, heads, dim] in and out.
    Runs where the varlen kernel cannot (CPU, float32, torch < 2.10); slow for many samples."""
    if k.shape[1] != q.shape[1]:  # GQA: transformers' repeat_kv order (each kv head n_rep times)
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    q, k = q.to(v.dtype), k.to(v.dtype)
    bounds = cu_seqlens.tolist()
    outs = [
        F.scaled_dot_product_attention(
            *(x[s:e].transpose(0, 1)[None] for x in (q, k, v)), is_causal=True, scale=scale
        )[0].transpose(0, 1)
        for s, e in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return torch.cat(outs)


def _compute_dtype(q: torch.Tensor, v: torch.Tensor) -> torch.dtype | None:
    # under autocast Qwen3's q/k norms hand back float32: the kernel wants autocast's half dtype
    if torch.is_autocast_enabled(q.device.type):
        return torch.get_autocast_dtype(q.device.type)
    return v.dtype if v.dtype in _HALF else None


def varlen_packed(q, k, v, cu_seqlens: torch.Tensor, max_len: int, scale: float | None) -> torch.Tensor:
    """torch's varlen flash kernel where it runs (CUDA, fp16/bf16), else ``segment_sdpa``."""
    dtype = _compute_dtype(q, v)
    if varlen_attn is None or not q.is_cuda or dtype not in _HALF:
        if q.is_cuda:
            warnings.warn(
                f"{VARLEN}: torch's varlen kernel needs torch >= 2.10 and fp16/bf16 (got {q.dtype}, torch "
                f"{torch.__version__}); using per-sample sdpa, which is slow. Train with precision bf16-mixed.",
                stacklevel=3,
            )
        return segment_sdpa(q, k, v, cu_seqlens, scale)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    gqa = k.shape[1] != q.shape[1]
    if gqa and not _VARLEN_GQA:
        k, v = (x.repeat_interleave(q.shape[1] // x.shape[1], dim=1) for x in (k, v))
    extra = {"enable_gqa": True} if gqa and _VARLEN_GQA else {}
    return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, scale=scale, **_CAUSAL, **extra)


def qinyu_varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    cu_seq_lens_q: torch.Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The transformers attention function: [batch, heads, len, dim] in, [batch, len, heads, dim] out."""
    if cu_seq_lens_q is None or query.shape[2] != key.shape[2]:
        # no boundaries given (generation with a cache, a direct backbone call): sdpa and its mask
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, sliding_window=sliding_window, **kwargs
        )
    if sliding_window is not None or dropout:
        raise ValueError(
            f"{VARLEN} has no sliding-window attention or attention dropout (got sliding_window={sliding_window}, "
            f"dropout={dropout}); set model.net.attn_implementation to sdpa or flash_attention_2"
        )
    b, heads, length, dim = query.shape
    q, k, v = (x.transpose(1, 2).reshape(b * length, x.shape[1], dim) for x in (query, key, value))
    out = varlen_packed(q, k, v, cu_seq_lens_q, int(max_length_q), scaling)
    return out.view(b, length, heads, dim), None


def sdpa_mask_always(*args, allow_is_causal_skip=False, allow_is_bidirectional_skip=False, **kwargs):
    """transformers' sdpa mask, always built: its "can the mask be skipped?" test asks the device whether
    every frame is valid (``padding_mask.all()``), a read per forward; building the small mask costs less."""
    return sdpa_mask(*args, allow_is_causal_skip=False, allow_is_bidirectional_skip=False, **kwargs)


def without_mask_skip(module: torch.nn.Module) -> None:
    """Run an sdpa module (the frozen audio encoder) with ``sdpa_mask_always``: the same attention, no host read."""
    if module.config._attn_implementation == "sdpa":
        module.config._attn_implementation = SDPA_NO_SKIP


SDPA_NO_SKIP = "qinyu_sdpa"
AttentionInterface.register(SDPA_NO_SKIP, sdpa_attention_forward)
AttentionMaskInterface.register(SDPA_NO_SKIP, sdpa_mask_always)
AttentionInterface.register(VARLEN, qinyu_varlen_attention)
AttentionMaskInterface.register(VARLEN, sdpa_mask)  # only used on the sdpa fallback (see the module docstring)
