"""SenseVoiceSmall, the released VITA-QinYu's speech encoder (``audio_encoder_type: sense_voice``).

Its SAN-M stack is the one transformers ships as ``FunAsrNanoEncoder`` (the converter renames the
FunASR tensors onto it, docs/stages.md); what SenseVoice adds is a table of 16 query vectors in the
LFR input space (560). Before the stack, 4 of them are prepended to every clip, in the order the
release's ``inference_encode`` uses with language "auto" and no ITN: rows 0 (language), 1 (event),
2 (emotion) and 15 (text norm "woitn"). A clip of N LFR frames therefore gives N + 4 outputs, and
the official prompt holds N + 4 ``<|context_of_audio|>`` placeholders for it.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.models.fun_asr_nano.modeling_fun_asr_nano import FunAsrNanoEncoder

QUERY_ROWS = (0, 1, 2, 15)  # language "auto", event, emotion, text norm "woitn"
NUM_QUERY_EMBEDDINGS = 16  # 7 + 7 language ids + 2 text-norm ids


class SenseVoiceEncoder(FunAsrNanoEncoder):
    """``FunAsrNanoEncoder`` + SenseVoice's query embeddings (``query_embed``, [16, input_size])."""

    def __init__(self, config):
        super().__init__(config)
        self.query_embed = nn.Embedding(NUM_QUERY_EMBEDDINGS, config.input_size)
        self.post_init()


def run_sense_voice(
    encoder: SenseVoiceEncoder, features: torch.Tensor, lens: torch.Tensor, host_lens: list[int] | None = None
) -> list[torch.Tensor]:
    """Padded LFR features [B, T, 560] with ``lens`` valid frames -> one [lens_i + 4, width] tensor per clip."""
    host_lens = lens.tolist() if host_lens is None else host_lens  # the collate's counts: no device read
    rows = torch.tensor(QUERY_ROWS, device=features.device)
    queries = encoder.query_embed(rows).to(features.dtype)
    stacked = torch.cat([queries.expand(features.shape[0], -1, -1), features], dim=1)
    lens = lens + len(QUERY_ROWS)
    mask = (torch.arange(stacked.shape[1], device=features.device)[None] < lens[:, None]).long()
    hidden = encoder(input_features=stacked, input_features_mask=mask).last_hidden_state
    return [hidden[i, : n + len(QUERY_ROWS)] for i, n in enumerate(host_lens)]
