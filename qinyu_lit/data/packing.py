"""Fixed-length packing of whole samples (paper: 10,000 tokens per sequence, no attention across samples).

A pack is a list of ``TokenSequence``s laid end to end; ``batch.collate`` restarts
``position_ids`` at 0 for each one, and transformers derives a block-diagonal causal mask
from those position ids (``masking_utils.find_packed_sequence_indices``), so packed samples
never attend to each other. This module only decides *which* samples share a pack.

* ``best_fit_decreasing`` - the packer the stream uses: within a bounded window of samples,
  longest first, each into the fullest pack it still fits. Whatever it cannot fill well is
  handed back (``leftover``) so the next window can complete it.
* ``greedy_packs`` - the official VITA-Audio/QinYu approach (append to one open pack, emit it
  when the next sample would overflow); kept as the baseline for ``benchmarks/packing_efficiency.py``.
* ``fit_length`` - what happens to a sample longer than the pack: truncated (``TokenLayout.truncate``,
  never cutting a user-speech span) or dropped, by policy, and counted either way; a truncation that
  leaves no target (cut before the answer) is dropped.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .layout import TokenSequence

OVERLONG_POLICIES = ("truncate", "drop")


@dataclass
class Bin:
    """One pack being filled: member indices into the window, and the tokens used."""

    members: list[int]
    used: int


def fit_length(seq: TokenSequence, pack_length: int, policy: str, layout) -> TokenSequence | None:
    """``seq`` if it fits, else truncated to ``pack_length`` or ``None`` (dropped) by ``policy``.
    A preference pair that does not fit is dropped whatever the policy: cut replies compare nothing."""
    if seq.footprint <= pack_length:
        return seq
    if policy == "drop" or seq.rejected is not None:
        return None
    if policy != "truncate":
        raise ValueError(f"data.overlong must be one of {OVERLONG_POLICIES}, got {policy!r}")
    cut = layout.truncate(seq, pack_length)
    # a user-speech span straddling the end is cut before its start; nothing left, or a cut before
    # the answer (no target left: the sample would cost pack room and teach nothing), means drop
    return cut if cut.num_targets > 0 else None


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[Bin]:
    """Best-fit decreasing: items longest first, each into the open bin with the least room
    that still holds it (a new bin if none). O(n log n) with a sorted list of free space.

    Ties break by index so the result is a pure function of ``lengths`` (resume replays it).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[Bin] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), kept sorted
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} has length {n} > capacity {capacity}; apply fit_length first")
        j = bisect.bisect_left(free, (n, -1))
        if j < len(free):
            room, b = free.pop(j)
        else:
            room, b = capacity, len(bins)
            bins.append(Bin([], 0))
        bins[b].members.append(i)
        bins[b].used += n
        if room - n > 0:
            bisect.insort(free, (room - n, b))
    return bins


def split_full(
    bins: list[Bin], capacity: int, min_fill: float, max_leftover: int
) -> tuple[list[Bin], list[Bin]]:
    """Bins filled to at least ``min_fill`` are ready; the rest go back as leftovers, emptiest
    first, until ``max_leftover`` members are held back (the rest ship anyway: memory stays bounded)."""
    ready = [b for b in bins if b.used >= min_fill * capacity]
    under = sorted((b for b in bins if b.used < min_fill * capacity), key=lambda b: b.used)
    leftover, held = [], 0
    for b in under:
        if held + len(b.members) <= max_leftover:
            leftover.append(b)
            held += len(b.members)
        else:
            ready.append(b)
    return ready, leftover


def greedy_packs(lengths: Iterable[int], capacity: int) -> list[list[int]]:
    """The official approach: one open pack per worker, emitted when the next sample would overflow."""
    packs, cur, used = [], [], 0
    for i, n in enumerate(lengths):
        if cur and used + n > capacity:
            packs.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        packs.append(cur)
    return packs
