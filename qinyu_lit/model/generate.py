"""Autoregressive decoding of the interleaved reply, with a KV cache.

Each step the extended head (text vocab + codebook 0) decides the modality: a text id
is a text position; a codebook-0 class is an audio frame whose other codes come from the
7 codebook heads. The frame is fed back as the mean of its codebook embeddings, exactly
as in training. Decoding stops at ``<|im_end|>`` (the end of the assistant turn); audio
positions are undelayed into frames ``[C, T]``.

How ids are picked is the caller's choice: ``pick_text`` sees the extended head's logits,
``pick_audio`` the codebook heads' logits. Both default to greedy; ``sampling.Sampler``
gives temperature / top-k / top-p, separately for each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..data.delay import undelay
from .qinyu import QinYuModel
from .sampling import greedy

__all__ = ["Generated", "generate", "greedy"]


@dataclass
class Generated:
    text: str
    text_ids: list[int]
    codes: torch.Tensor  # [C, frames] with the delay undone
    positions: list[str]  # "t" or "a" per generated position (the interleave as produced)
    finished: bool  # True when <|im_end|> was produced

    @property
    def num_frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def frames_per_text_token(self) -> float:
        """Speech frames per text token of the reply; too low is the paper's "overly fast" speech."""
        return self.num_frames / max(len(self.text_ids), 1)


@torch.no_grad()
def generate(
    model: QinYuModel, prompt: dict, max_new_positions: int = 512, pick_text=greedy, pick_audio=greedy
) -> Generated:
    """Continue a one-row prompt batch (from ``collate``) until ``<|im_end|>``.

    Args:
        model: the QinYu model (put in eval mode for the call, restored afterwards).
        prompt: a collated batch of one row that ends where the assistant starts
            (``TokenLayout.build(sample, prompt_only=True)``).
        max_new_positions: stop after this many generated positions (text ids + frames);
            ``finished`` is then False.
        pick_text: ``logits [vocab + codebook_size + 1] -> id`` for the extended head.
        pick_audio: ``logits [C - 1, codebook_size + 1] -> ids [C - 1]`` for codebooks 1..C-1.
    """
    if prompt["input_ids"].shape[0] != 1:
        raise ValueError("generate takes a single prompt (batch of one row)")
    for pick in {id(pick_text): pick_text, id(pick_audio): pick_audio}.values():
        if hasattr(pick, "reset"):
            pick.reset()  # a seeded sampler replays the same draws on every call
    was_training = model.training
    model.eval()
    try:
        return _decode(model, prompt, max_new_positions, pick_text, pick_audio)
    finally:
        model.train(was_training)


def _decode(model: QinYuModel, prompt: dict, max_new_positions: int, pick_text, pick_audio) -> Generated:
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
            rest = pick_audio(model.code_logits(hidden)[0].float()).reshape(-1)
            frame = torch.cat([torch.tensor([choice - model.text_vocab], device=hidden.device), rest.to(hidden.device)])
            frames.append(frame)
            kinds.append("a")
            embed = model.embed_codes(frame[None, None]).to(hidden.dtype)
        out = decoder(inputs_embeds=embed, position_ids=position, past_key_values=cache, use_cache=True)
        hidden, position = out.last_hidden_state[:, -1], position + 1
    num_cb = model.config.num_codebooks
    if len(frames) >= num_cb - 1:
        codes = undelay(torch.stack(frames, dim=1), num_cb)
    else:  # fewer positions than the delay pads: no complete frame
        codes = torch.zeros(num_cb, 0, dtype=torch.long)
    text = model.tokenizer.decode(text_ids)
    return Generated(text=text, text_ids=text_ids, codes=codes.cpu(), positions=kinds, finished=finished)
