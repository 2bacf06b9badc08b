"""How the next text id and the next audio codes are picked from the heads' logits.

``Sampler`` is the ``pick_text`` / ``pick_audio`` callable that ``generate`` takes. The
text head and the audio heads get separate samplers because they want different settings:
text is usually decoded near-greedily, while audio codes sound better with some
temperature (greedy codes tend to repeat). The filters are transformers' own logits
warpers (temperature, top-k, top-p), applied in that order as in ``model.generate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the last dimension."""
    return logits.argmax(-1)


@dataclass
class Sampler:
    """Picks ids from logits ``[..., vocab]`` (one id per leading index).

    Args:
        temperature: softmax temperature; ``0`` means greedy (argmax), whatever the other fields.
        top_k: keep the ``top_k`` most likely ids before sampling; ``0`` keeps all.
        top_p: keep the smallest set of ids whose probability adds up to ``top_p``; ``1.0`` keeps all.
        seed: seed of this sampler's own random generator, so a run is reproducible without
            touching the global torch seed; ``None`` draws from the global generator.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        warpers = []
        if self.temperature > 0:
            warpers.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k > 0:
                warpers.append(TopKLogitsWarper(self.top_k))
            if self.top_p < 1.0:
                warpers.append(TopPLogitsWarper(self.top_p))
        self._warpers = LogitsProcessorList(warpers)
        self._generator: torch.Generator | None = None

    @property
    def is_greedy(self) -> bool:
        # top_k == 1 keeps one id: sampling from it is the argmax, without drawing a random number
        return self.temperature == 0 or self.top_k == 1

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.is_greedy:
            return greedy(logits)
        flat = logits.float().reshape(-1, logits.shape[-1])
        flat = self._warpers(None, flat)  # the warpers ignore input_ids
        probs = torch.softmax(flat, dim=-1)
        picked = torch.multinomial(probs, 1, generator=self._rng(probs.device)).squeeze(-1)
        return picked.reshape(logits.shape[:-1])

    def reset(self) -> None:
        """Start the seeded generator again (``generate`` calls this), so equal calls give equal replies."""
        self._generator = None

    def _rng(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator


def repetition_penalty(logits: torch.Tensor, recent: list[int], penalty: float) -> torch.Tensor:
    """The released VITA-QinYu's penalty on recent codebook-0 classes, applied once per occurrence.

    Each class in ``recent`` (repeats included) has its logit divided by ``penalty`` if positive,
    multiplied if negative: a class seen twice in the window is penalised by ``penalty ** 2``.
    (transformers' ``RepetitionPenaltyLogitsProcessor`` penalises a repeated id once; the release
    builds its set from tensors, which hash by identity, so every occurrence counts.)
    """
    out = logits.clone()
    for cls in recent:
        out[cls] = out[cls] * penalty if out[cls] < 0 else out[cls] / penalty
    return out
