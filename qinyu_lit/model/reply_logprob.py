"""log p(reply | prompt) per sequence, from the same per-position terms as the Eq. 3 loss (for DPO).

Position t predicts the content of t+1 where ``target_mask[t+1]``. A text target contributes the
log-probability of its token under the extended head (text + codebook 0); an audio target the MEAN
log-probability of its C codes (codebook 0 from the same head, 1..C-1 from the codebook heads), as
Eq. 3 averages the C cross-entropies there - so a frame weighs like a text token. The reply's
log-probability is the sum over its supervised positions (or, with ``normalise``, their mean).
Batches must be unpacked: one sequence per row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from .qinyu import QinYuModel


def position_logprobs(model: QinYuModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each supervised target ([N], float32) and the row it belongs to ([N])."""
    if any(len(row) > 1 for row in batch.get("lengths", [])):
        raise ValueError("reply log-probabilities need unpacked batches (one sequence per row)")
    hidden = model.hidden_states(batch)
    mask = batch["target_mask"][:, 1:]
    rows = torch.arange(mask.shape[0], device=mask.device)[:, None].expand_as(mask)[mask]
    h = hidden[:, :-1][mask]
    next_ids, next_codes = batch["input_ids"][:, 1:][mask], batch["codes"][:, 1:][mask]
    is_audio = next_codes[:, 0] >= 0
    text_class = next_ids if model.shared is None else model.shared.text_class(next_ids)
    target0 = torch.where(is_audio, model.audio_class(next_codes[:, 0].clamp(min=0)), text_class)
    logp0 = F.log_softmax(model.head0_logits(h).float(), -1).gather(-1, target0[:, None])[:, 0]
    rest = F.log_softmax(model.code_logits(h).float(), -1)  # [N, C-1, K]
    targets_rest = torch.where(is_audio[:, None], next_codes[:, 1:], 0)
    logp_rest = rest.gather(-1, targets_rest[..., None])[..., 0]  # [N, C-1]
    audio = torch.cat([logp0[:, None], logp_rest], 1).mean(1)
    return torch.where(is_audio, audio, logp0), rows


def sum_by_row(logp: torch.Tensor, rows: torch.Tensor, num_rows: int, normalise: bool = False) -> torch.Tensor:
    """Per-position log-probabilities -> [num_rows] sums (``normalise``: means) over each row's positions."""
    total = torch.zeros(num_rows, device=logp.device, dtype=logp.dtype).index_add(0, rows, logp)
    if normalise:
        total = total / torch.bincount(rows, minlength=num_rows).clamp(min=1).to(total.dtype)
    return total


def reply_logprobs(model: QinYuModel, batch: dict, normalise: bool = False) -> torch.Tensor:
    """[rows]: each sequence's summed (``normalise``: mean) log-probability over its supervised positions."""
    logp, rows = position_logprobs(model, batch)
    return sum_by_row(logp, rows, batch["input_ids"].shape[0], normalise)
