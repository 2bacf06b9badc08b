"""The released VITA-QinYu's output side (``heads: shared``): one ``lm_head`` for everything.

The release appends ``C x R`` audio tokens to the text vocabulary (R = rows per codebook, 1032 =
1024 codes + 8 pads), from ``audio_base`` = id of ``<|audio_0_0|>``: codebook i, value v is id
``audio_base + R*i + v``. Its single ``lm_head`` covers them all, and

* text + codebook 0 share one softmax over every id **except** the codebook 1..C-1 block
  ``[audio_base + R, audio_base + C*R)``; ids above that block move down by its width ``(C-1)*R``
  (the release's ``compute_xy_loss``: ``cat(logits[:V1], logits[V1 + W:])``);
* codebook i (1..C-1) logits are the slice ``[audio_base + R*i, audio_base + R*(i+1))``.

This module holds only that index arithmetic; the weights are the backbone's own ``lm_head``.
"""

from __future__ import annotations

import torch


class SharedHeads:
    """Index arithmetic of the shared head (no parameters).

    Args:
        audio_base: token id of codebook 0, value 0 (``<|audio_0_0|>``).
        rows: values per codebook (codes + pads).
        num_codebooks: C.
    """

    def __init__(self, audio_base: int, rows: int, num_codebooks: int):
        self.audio_base, self.rows, self.num_codebooks = audio_base, rows, num_codebooks
        self.block_start = audio_base + rows  # first id of codebook 1 (the release's first_audio_token_id)
        self.block_width = (num_codebooks - 1) * rows

    def head0(self, lm: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits -> text + codebook-0 logits (the codebook 1..C-1 block removed)."""
        return torch.cat(
            [lm[..., : self.block_start], lm[..., self.block_start + self.block_width :]], dim=-1
        )

    def codes(self, lm: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits -> codebooks 1..C-1: [..., C-1, rows]."""
        block = lm[..., self.block_start : self.block_start + self.block_width]
        return block.unflatten(-1, (self.num_codebooks - 1, self.rows))

    def code0_class(self, value: torch.Tensor | int):
        """Class in the head-0 space of codebook-0 value ``value`` (below the block: unchanged id)."""
        return self.audio_base + value

    def text_class(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (never inside the block) -> classes of the head-0 space."""
        return torch.where(ids >= self.block_start, ids - self.block_width, ids)

    def token_of_class(self, choice: int) -> int:
        """A head-0 class back to its token id (the inverse of ``text_class`` / ``code0_class``)."""
        return choice + self.block_width if choice >= self.block_start else choice
