"""Cross-entropy over a large vocabulary in chunks of positions (litgpt ``chunked_cross_entropy``,
torchtune's chunked output loss), without ever holding ``[positions x vocab]`` fp32 logits.

A 10K pack has thousands of supervised positions and Qwen3 has ~152K classes: one fp32 logits
tensor is ~6 GB, and autograd would keep it (and its log-softmax) until the backward. Here the
heads run on ``chunk`` positions at a time: the matmul in the model's dtype (bf16 on GPUs), the
log-softmax in fp32, and only the per-position CE values (``[positions, C]``) leave a chunk. With
more than one chunk each chunk runs under activation checkpointing, so autograd keeps only the
chunk's input rows and recomputes the chunk's logits in the backward, one chunk at a time: peak
memory of the loss falls from O(positions x vocab) to O(chunk x vocab) for the price of running
the heads' forward matmul twice (about 2 of the 6 FLOPs per head weight and position; not counted
in MFU, which counts the model's work, ``model/flops.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

LogitsFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _chunk_ce(logits_fn: LogitsFn, h: torch.Tensor, target0: torch.Tensor, target_rest: torch.Tensor):
    """One chunk: logits -> fp32 -> CE and correct-argmax per codebook, [n, C] each."""
    logits0, logits_rest = logits_fn(h)
    logits0, logits_rest = logits0.float(), logits_rest.float()
    ce0 = F.cross_entropy(logits0, target0, reduction="none")
    ce_rest = F.cross_entropy(logits_rest.transpose(1, 2), target_rest, reduction="none")  # [n, C-1]
    correct = torch.cat([(logits0.argmax(-1) == target0)[:, None], logits_rest.argmax(-1) == target_rest], 1)
    return torch.cat([ce0[:, None], ce_rest], 1), correct


def chunked_head_ce(
    logits_fn: LogitsFn, h: torch.Tensor, target0: torch.Tensor, target_rest: torch.Tensor, chunk: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """CE of every supervised position under head 0 (text + codebook 0) and the codebook heads.

    Args:
        logits_fn: hidden rows ``[n, H]`` -> (head-0 logits ``[n, V0]``, codebook logits ``[n, C-1, K]``).
        h: ``[N, H]`` hidden states of the positions that predict a target.
        target0: ``[N]`` head-0 classes; target_rest: ``[N, C-1]`` codebook values (any valid class at
            text positions: the caller weights them out).
        chunk: positions per chunk.

    Returns ``(ce [N, C] fp32, correct [N, C] bool)``. The chunk count comes from the host-side shape:
    no device value is read.
    """
    n = h.shape[0]
    if n <= chunk:
        return _chunk_ce(logits_fn, h, target0, target_rest)
    parts = []
    for s in range(0, n, chunk):
        args = (h[s : s + chunk], target0[s : s + chunk], target_rest[s : s + chunk])
        if torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_ce, logits_fn, *args, use_reentrant=False))
        else:
            parts.append(_chunk_ce(logits_fn, *args))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
