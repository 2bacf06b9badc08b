"""Packing efficiency at 10K tokens: real (non-padding) tokens / tokens computed, on one length mix.

Three ways to batch the same samples in the same (shuffled) order:

* ours: the stream's packer (best-fit decreasing over a window of ``--window`` samples,
  packs under ``min_fill`` carried to the next window; ``ShardStream._arrange``, the code the loader runs);
* official: each data-loader worker appends samples to one open pack and emits it when the
  next sample would overflow (VITA-Audio/QinYu ``__getitem__`` packing), packs padded to 10K;
* pad-to-longest: unpacked micro-batches of ``--batch`` samples padded to their longest.

    python benchmarks/packing_efficiency.py [--samples 20000] [--workers 4]

Lengths follow the mix in ``_corpus.py`` (ASR, TTS, text, dialogue, 1% long-form up to 300 s);
token counts are computed with the same arithmetic the layout uses (12.5 Hz frames + 7 delay,
16.7 Hz user-speech placeholders, ~1.3 tokens per word), so no shards are needed.
"""

from __future__ import annotations

import argparse

import numpy as np

from qinyu_lit.data.layout import TokenSequence
from qinyu_lit.data.packing import greedy_packs
from qinyu_lit.data.stream import ShardStream

MIX = {"asr": 0.25, "tts": 0.25, "text": 0.14, "dialogue": 0.35, "long": 0.01}


def lengths(n: int, rng) -> np.ndarray:
    tasks = rng.choice(list(MIX), size=n, p=list(MIX.values()))
    out = []
    for t in tasks:
        words = lambda lo, hi: int(1.3 * rng.integers(lo, hi))  # noqa: E731
        frames = lambda lo, hi: int(12.5 * rng.uniform(lo, hi)) + 7  # noqa: E731
        user = lambda lo, hi: int(16.7 * rng.uniform(lo, hi))  # noqa: E731
        header = 24
        if t == "asr":
            out.append(header + user(2, 25) + words(5, 75))
        elif t == "tts":
            out.append(header + words(5, 40) * 2 + frames(2, 15))
        elif t == "text":
            out.append(header + words(5, 60) + words(10, 300))
        elif t == "dialogue":
            turns = int(rng.integers(1, 4))
            out.append(header + sum(user(2, 15) + words(10, 60) for _ in range(turns)) + frames(3, 25))
        else:
            out.append(header + words(100, 500) + frames(60, 300))
    return np.asarray(out)


def ours(lens: np.ndarray, pack: int, window: int) -> tuple[int, int]:
    stream = ShardStream.__new__(ShardStream)  # only the arranging logic, no shards
    stream.pack_length, stream.batch_size, stream.min_fill, stream.window, stream.shuffle_buffer = (
        pack,
        1,
        0.99,
        window,
        0,
    )
    dummy = [
        TokenSequence(np.zeros(min(n, pack), np.int64), np.zeros((0, 8)), np.zeros(0, bool)) for n in lens
    ]
    carried, packs = [], 0
    for c in range(0, len(dummy), window):
        fresh = [(i, dummy[i]) for i in range(c, min(c + window, len(dummy)))]
        batches, carried = stream._arrange(carried + fresh, c + window >= len(dummy), None)
        packs += len(batches)
    return packs, packs * pack


def official(lens: np.ndarray, pack: int, workers: int) -> tuple[int, int]:
    packs = 0
    for w in range(workers):  # each worker packs its own share, flushes its last pack
        packs += len(greedy_packs(np.minimum(lens[w::workers], pack), pack))
    return packs, packs * pack


def pad_to_longest(lens: np.ndarray, batch: int) -> tuple[int, int]:
    cost = sum(len(lens[i : i + batch]) * int(lens[i : i + batch].max()) for i in range(0, len(lens), batch))
    return -(-len(lens) // batch), cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--pack-length", type=int, default=10_000)
    ap.add_argument("--window", type=int, default=512, help="our packer's window (data.pack_window)")
    ap.add_argument("--workers", type=int, default=4, help="data-loader workers of the official approach")
    ap.add_argument("--batch", type=int, default=16, help="samples per pad-to-longest micro-batch")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    lens = lengths(args.samples, rng)
    real = int(np.minimum(lens, args.pack_length).sum())
    print(
        f"{len(lens)} samples, mean {lens.mean():.0f} tokens, median {np.median(lens):.0f}, max {lens.max()}, "
        f"{(lens > args.pack_length).sum()} over {args.pack_length} (truncated), {real:,} real tokens"
    )
    print(f"{'method':<34}{'batches':>9}{'tokens computed':>18}{'real tokens':>13}")
    for name, (n, cost) in (
        (f"ours (best-fit, window {args.window})", ours(lens, args.pack_length, args.window)),
        (f"official (greedy, {args.workers} workers)", official(lens, args.pack_length, args.workers)),
        (f"pad-to-longest (batch {args.batch})", pad_to_longest(lens, args.batch)),
    ):
        print(f"{name:<34}{n:>9,}{cost:>18,}{real / cost:>12.2%}")


if __name__ == "__main__":
    main()
