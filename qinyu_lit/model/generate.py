"""Autoregressive decoding of the interleaved reply, with a KV cache.

Each step the extended head (text vocab + codebook 0) decides the modality: a text id
is a text position; a codebook-0 class is an audio frame whose other codes come from the
7 codebook heads. The frame is fed back as the mean of its codebook embeddings, exactly
as in training. Decoding stops at ``<|im_end|>``; audio positions are undelayed into
frames ``[C, T]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..data.delay import undelay
from .qinyu import QinYuModel


@dataclass
class Generated:
    text: str
    text_ids: list[int]
    codes: torch.Tensor  # [C, frames] with the delay undone
    positions: list[str]  # "t" or "a" per generated position (the interleave as produced)
    finished: bool  # True when <|im_end|> was produced


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


@torch.no_grad()
def generate(
    model: QinYuModel, prompt: dict, max_new_positions: int = 512, pick_text=greedy, pick_audio=greedy
) -> Generated:
    """Continue a one-row prompt batch (from ``collate``) until ``<|im_end|>``.

    ``pick_text`` chooses from the extended head's logits, ``pick_audio`` from the codebook
    heads' logits ``[C-1, K]``; both default to greedy (argmax).
    """
    if prompt["input_ids"].shape[0] != 1:
        raise ValueError("generate takes a single prompt (batch of one row)")
    was_training = model.training
    model.eval()
    decoder = model.backbone.get_decoder()
    cache = DynamicCache(config=model.backbone.config)
    out = decoder(
        inputs_embeds=model.embed_inputs(prompt),
        position_ids=prompt["position_ids"],
        past_key_values=cache,
        use_cache=True,
    )
    hidden = out.last_hidden_state[:, -1]
    position = prompt["position_ids"][:, -1:] + 1
    text_ids, frames, kinds, finished = [], [], [], False
    for _ in range(max_new_positions):
        choice = int(pick_text(model.head0_logits(hidden)[0].float()))
        if choice < model.text_vocab:
            if choice == model.ids.im_end:
                finished = True
                break
            text_ids.append(choice)
            kinds.append("t")
            embed = model.backbone.get_input_embeddings()(torch.tensor([[choice]], device=hidden.device))
        else:
            rest = pick_audio(model.code_logits(hidden)[0].float())
            frame = torch.cat([torch.tensor([choice - model.text_vocab], device=hidden.device), rest])
            frames.append(frame)
            kinds.append("a")
            embed = model.embed_codes(frame[None, None]).to(hidden.dtype)
        out = decoder(inputs_embeds=embed, position_ids=position, past_key_values=cache, use_cache=True)
        hidden, position = out.last_hidden_state[:, -1], position + 1
    model.train(was_training)
    num_cb = model.config.num_codebooks
    if len(frames) >= num_cb - 1:
        codes = undelay(torch.stack(frames, dim=1), num_cb)
    else:
        codes = torch.zeros(num_cb, 0, dtype=torch.long)
    text = model.tokenizer.decode(text_ids)
    return Generated(text=text, text_ids=text_ids, codes=codes.cpu(), positions=kinds, finished=finished)
