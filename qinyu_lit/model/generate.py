"""Autoregressive decoding of the interleaved reply, with a KV cache.

Each step the extended head (text vocab + codebook 0) decides the modality: a text id
is a text position; a codebook-0 class is an audio frame whose other codes come from the
7 codebook heads. The frame is fed back as the mean of its codebook embeddings, exactly
as in training. Decoding stops at ``<|im_end|>`` (the end of the assistant turn); audio
positions are undelayed into frames ``[C, T]``.

How ids are picked is the caller's choice: ``pick_text`` sees the extended head's logits,
``pick_audio`` the codebook heads' logits. Both default to greedy; ``sampling.Sampler``
gives temperature / top-k / top-p, separately for each.

A model with ``token_layout: official`` (a converted release) decodes by the release's rules:
text vs codebook 0 is chosen with the codebook 1..C-1 slice of the shared head left out (the
model's ``head0_logits``); when that pick is audio and a frame exists, it is picked again over
text + codebook 0 only, with the last 5 codebook-0 classes penalised by 1.1 per occurrence (it
may become text); up to 1024 positions; the text is decoded without special tokens, so
``<|end_of_conv|>`` goes; the frames are undelayed and pads become code 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from ..data.delay import undelay
from .qinyu import QinYuModel
from .sampling import greedy, repetition_penalty

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


# the release's decoding (utils/xy_inference_utils.py): steps, penalty, penalty window
OFFICIAL_MAX_POSITIONS, OFFICIAL_PENALTY, PENALTY_WINDOW = 1024, 1.1, 5


@torch.no_grad()
def generate(
    model: QinYuModel,
    prompt: dict,
    max_new_positions: int | None = None,
    pick_text=greedy,
    pick_audio=greedy,
    repetition_penalty: float | None = None,
) -> Generated:
    """Continue a one-row prompt batch (from ``collate``) until ``<|im_end|>``.

    Args:
        model: the QinYu model (put in eval mode for the call, restored afterwards).
        prompt: a collated batch of one row that ends where the assistant starts
            (``TokenLayout.build(sample, prompt_only=True)``).
        max_new_positions: stop after this many generated positions (text ids + frames);
            ``finished`` is then False. Default 1024 for ``token_layout: official``, else 512.
        pick_text: ``logits [vocab + codebook_size + 1] -> id`` for the extended head.
        pick_audio: ``logits [C - 1, rows] -> ids [C - 1]`` for codebooks 1..C-1.
        repetition_penalty: penalty on the last 5 codebook-0 classes when an audio position is
            picked (``1.0`` off). Default 1.1 for ``token_layout: official``, else off.
    """
    official = model.config.token_layout == "official"
    if max_new_positions is None:
        max_new_positions = OFFICIAL_MAX_POSITIONS if official else 512
    if repetition_penalty is None:
        repetition_penalty = OFFICIAL_PENALTY if official else 1.0
    if prompt["input_ids"].shape[0] != 1:
        raise ValueError("generate takes a single prompt (batch of one row)")
    for pick in {id(pick_text): pick_text, id(pick_audio): pick_audio}.values():
        if hasattr(pick, "reset"):
            pick.reset()  # a seeded sampler replays the same draws on every call
    was_training = model.training
    model.eval()
    try:
        return _decode(model, prompt, max_new_positions, pick_text, pick_audio, repetition_penalty)
    finally:
        model.train(was_training)


def _decode(model: QinYuModel, prompt: dict, max_new_positions: int, pick_text, pick_audio, penalty: float) -> Generated:
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
        is_audio, value = _choose(model, model.head0_logits(hidden)[0].float(), frames, pick_text, penalty)
        if not is_audio:
            if value == model.ids.im_end:
                finished = True
                break
            text_ids.append(value)
            kinds.append("t")
            embed = model.backbone.get_input_embeddings()(torch.tensor([[value]], device=hidden.device))
        else:
            rest = pick_audio(model.code_logits(hidden)[0].float()).reshape(-1)
            frame = torch.cat([torch.tensor([value], device=hidden.device), rest.to(hidden.device)])
            frames.append(frame)
            kinds.append("a")
            embed = model.embed_codes(frame[None, None]).to(hidden.dtype)
        out = decoder(inputs_embeds=embed, position_ids=position, past_key_values=cache, use_cache=True)
        hidden, position = out.last_hidden_state[:, -1], position + 1
    return Generated(
        text=_text(model, text_ids), text_ids=text_ids, codes=_frames(model, frames), positions=kinds, finished=finished
    )


def _choose(model: QinYuModel, logits0: torch.Tensor, frames: list, pick_text, penalty: float) -> tuple[bool, int]:
    """One head-0 pick -> (True, codebook-0 value) or (False, token id), with the release's second
    look: an audio pick after at least one frame is redone over text + codebook 0 alone with the
    recent codebook-0 classes penalised (it may turn into text)."""
    is_audio, value = model.split_class(int(pick_text(logits0)))
    if is_audio and frames and penalty != 1.0:
        rows = model.rows_per_codebook
        narrow = logits0[: model.audio_class(rows)]  # text + codebook 0: no ids above the audio block
        recent = [model.audio_class(int(f[0])) for f in frames[-PENALTY_WINDOW:]]
        is_audio, value = model.split_class(int(pick_text(repetition_penalty(narrow, recent, penalty))))
    return is_audio, value


def _text(model: QinYuModel, text_ids: list[int]) -> str:
    if model.config.token_layout != "official":
        return model.tokenizer.decode(text_ids)
    # the release's clean-up; this text is also what goes back into the history
    text = model.tokenizer.decode(text_ids, skip_special_tokens=True).strip()
    return text.replace("<|im_end|>", "").replace("<|end_of_conv|>", "")


def _frames(model: QinYuModel, frames: list) -> torch.Tensor:
    num_cb = model.config.num_codebooks
    if len(frames) < num_cb - 1:  # fewer positions than the delay pads: no complete frame
        return torch.zeros(num_cb, 0, dtype=torch.long)
    codes = undelay(torch.stack(frames, dim=1), num_cb).cpu()
    if model.config.token_layout == "official":
        codes = torch.where(codes >= model.pad_code, 0, codes)  # the release decodes a stray pad as code 0
    return codes
