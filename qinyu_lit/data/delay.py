"""The codebook delay (paper Fig. 1): codebook j is shifted right by j frames.

A frame stack [C, T] becomes [C, T + C - 1] positions; the empty corners are filled
with pads. ``delay`` and ``undelay`` are an exact inverse pair and the only place in
the project that knows about the shift. Two pad schemes (``pads``):

* ``"single"`` (models trained here): one pad id ``pad`` (= K) everywhere; tables hold K + 1 rows.
* ``"positional"`` (the released VITA-QinYu): the pad names its delayed position. Codebook
  i at position k (0 <= k < T + C - 1) holds pad ``K + k`` for k < i, ``code[k - i]`` for
  i <= k < i + T and pad ``K + (k - T)`` for k >= i + T; tables hold K + C rows (1032 for
  8 x 1024). Codebook 0 ends with pads K+0..K+C-2, codebook C-1 starts with them; K+C-1 is
  never used.
"""

from __future__ import annotations

import numpy as np
import torch

PAD_SCHEMES = ("single", "positional")


def num_pad_ids(pads: str, num_codebooks: int) -> int:
    """Rows each codebook table needs beyond its K codes."""
    _check(pads)
    return 1 if pads == "single" else num_codebooks


def _check(pads: str) -> None:
    if pads not in PAD_SCHEMES:
        raise ValueError(f"delay pads must be one of {PAD_SCHEMES}, got {pads!r} (set delay_pads)")


def delay(codes, pad_id: int, pads: str = "single"):
    """[C, T] frames -> [C, T + C - 1] positions; out[j, t] = codes[j, t - j] or a pad.

    ``pad_id`` is the first pad (the codebook size K); ``pads`` picks the scheme above.
    """
    _check(pads)
    num_codebooks, frames = codes.shape
    width = frames + num_codebooks - 1
    if pads == "single":
        fill = np.full((num_codebooks, width), pad_id, dtype=np.int64)
    else:
        k = np.arange(width)
        j = np.arange(num_codebooks)[:, None]
        fill = np.where(k < j, pad_id + k, pad_id + k - frames)  # leading k < j, trailing k >= j + T
    if isinstance(codes, torch.Tensor):
        out = torch.as_tensor(fill, dtype=codes.dtype, device=codes.device)
    else:
        out = fill.astype(codes.dtype)
    for j in range(num_codebooks):
        out[j, j : j + frames] = codes[j]
    return out


def undelay(delayed, num_codebooks: int | None = None):
    """[C, P] positions -> [C, P - C + 1] frames; the exact inverse of ``delay`` (either scheme:
    the pads sit only in the corners that are cut off)."""
    num_codebooks = num_codebooks or delayed.shape[0]
    frames = delayed.shape[1] - num_codebooks + 1
    if frames < 0:
        raise ValueError(f"{delayed.shape[1]} positions are fewer than the {num_codebooks - 1} delay pads")
    rows = [delayed[j, j : j + frames] for j in range(num_codebooks)]
    return torch.stack(rows) if isinstance(delayed, torch.Tensor) else np.stack(rows)
