"""The loss before chunking (commit cba3808), kept only as the reference of tests/model/test_chunked_loss.py
and benchmarks/loss_memory.py: boolean-mask selection of the supervised positions (host reads) and full
``[positions x vocab]`` fp32 logits."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def old_loss(model, batch: dict, hidden: torch.Tensor | None = None) -> dict:
    """The loss as it was; ``hidden`` (the decoder output) skips the forward."""
    hidden = model.hidden_states(batch) if hidden is None else hidden
    mask = batch["target_mask"][:, 1:]
    h = hidden[:, :-1][mask]
    next_ids = batch["input_ids"][:, 1:][mask]
    next_codes = batch["codes"][:, 1:][mask]
    is_audio = next_codes[:, 0] >= 0
    if model.shared is None:
        target0 = torch.where(is_audio, model.text_vocab + next_codes[:, 0], next_ids)
        logits0 = model.head0_logits(h).float()
    else:
        target0 = torch.where(is_audio, model.shared.code0_class(next_codes[:, 0]), model.shared.text_class(next_ids))
        lm = model.backbone.get_output_embeddings()(h)
        logits0 = model.shared.head0(lm).float()
    ce0 = F.cross_entropy(logits0, target0, reduction="none")
    audio = is_audio.float()
    num_audio, num_text = audio.sum(), (1 - audio).sum()
    rest = model.code_logits(h) if model.shared is None else model.shared.codes(lm)
    targets_rest = torch.where(is_audio[:, None], next_codes[:, 1:], 0)
    ce_rest = F.cross_entropy(rest.float().transpose(1, 2), targets_rest, reduction="none")
    ce_all = torch.cat([ce0[:, None], ce_rest], dim=1)
    per_position = torch.where(is_audio, ce_all.mean(1), ce0)
    per_audio, per_text = audio / num_audio.clamp(min=1), (1 - audio) / num_text.clamp(min=1)
    loss = per_position.mean()
    if model.config.loss == "official":
        loss = ce0.mean() + (ce_rest.mean(1) * per_audio).sum()
    return dict(
        loss=loss + model._untouched_zero(), text_loss=(per_position * per_text).sum(),
        audio_loss=(per_position * per_audio).sum(), codebook_loss=(ce_all * per_audio[:, None]).sum(0),
    )  # fmt: skip
