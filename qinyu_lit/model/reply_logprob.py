"""log p(reply | prompt) per sequence, from the same per-position terms as the Eq. 3 loss (for DPO).

Position t predicts the content of t+1 where ``target_mask[t+1]``. A text target contributes the
log-probability of its token under the extended head (text + codebook 0); an audio target the MEAN
log-probability of its C codes (codebook 0 from the same head, 1..C-1 from the codebook heads), as
Eq. 3 averages the C cross-entropies there - so a frame weighs like a text token. The reply's
log-probability is the sum over its supervised positions (or, with ``normalise``, their mean).

Packed batches work as in training: the collate's ``pack`` says which sequence each supervised
position is in (``sup_segment``), the heads run chunk by chunk (``QinYuModel.position_logprobs``), and
nothing is read back from the device.
"""

from __future__ import annotations

import torch

from .qinyu import QinYuModel, with_pack


def position_logprobs(model: QinYuModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each supervised target ([N], float32) and the sequence it is in ([N],
    indices into the pack's ``cu_seqlens``); through the model's forward, so FSDP/DDP hooks run."""
    return model(batch, output="position_logprobs")


def sum_by_sequence(logp: torch.Tensor, sequence: torch.Tensor, num_sequences: int, normalise: bool = False):
    """Per-position log-probabilities -> ([num_sequences] sums, or means with ``normalise``; [num_sequences]
    supervised-position counts). Scatter-adds only: no device read (``bincount`` would sync)."""
    total = logp.new_zeros(num_sequences).index_add(0, sequence, logp)
    count = logp.new_zeros(num_sequences).index_add(0, sequence, torch.ones_like(logp))
    return (total / count.clamp(min=1) if normalise else total), count


def reply_logprobs(model: QinYuModel, batch: dict, normalise: bool = False) -> torch.Tensor:
    """[sequences]: each sequence's summed (``normalise``: mean) log-probability over its supervised
    positions, indexed as the pack's ``cu_seqlens`` (padding tails count as sequences, with 0)."""
    batch = with_pack(batch)
    logp, sequence = position_logprobs(model, batch)
    return sum_by_sequence(logp, sequence, batch["pack"]["cu_seqlens"].shape[0] - 1, normalise)[0]
