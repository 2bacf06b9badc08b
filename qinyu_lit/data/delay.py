"""The codebook delay (paper Fig. 1): codebook j is shifted right by j frames.

A frame stack [C, T] becomes [C, T + C - 1] positions; the empty corners are filled
with the codebook's pad id. ``delay`` and ``undelay`` are an exact inverse pair and the
only place in the project that knows about the shift.
"""

from __future__ import annotations

import numpy as np
import torch


def delay(codes, pad_id: int):
    """[C, T] frames -> [C, T + C - 1] positions; out[j, t] = codes[j, t - j] or pad_id."""
    num_codebooks, frames = codes.shape
    shape = (num_codebooks, frames + num_codebooks - 1)
    if isinstance(codes, torch.Tensor):
        out = codes.new_full(shape, pad_id)
    else:
        out = np.full(shape, pad_id, dtype=codes.dtype)
    for j in range(num_codebooks):
        out[j, j : j + frames] = codes[j]
    return out


def undelay(delayed, num_codebooks: int | None = None):
    """[C, P] positions -> [C, P - C + 1] frames; the exact inverse of ``delay``."""
    num_codebooks = num_codebooks or delayed.shape[0]
    frames = delayed.shape[1] - num_codebooks + 1
    if frames < 0:
        raise ValueError(f"{delayed.shape[1]} positions are fewer than the {num_codebooks - 1} delay pads")
    rows = [delayed[j, j : j + frames] for j in range(num_codebooks)]
    return torch.stack(rows) if isinstance(delayed, torch.Tensor) else np.stack(rows)
