"""Loader throughput: packed tokens/s of ONE worker through the whole path at pack length 10K.

tar -> group members -> decode_sample (JSON, FLAC, npy) -> fbank+LFR for user speech -> tokenize ->
interleave -> delay -> best-fit pack -> collate. Runs in the main process (= one data-loader worker).

    python benchmarks/loader_throughput.py [--samples 600] [--pack-length 10000]

Prints packed tokens/s for samples without user audio (target >= 100K/s per worker) and
audio-seconds/s for samples with user audio (target >= 200x real time per worker).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _corpus import NO_USER_AUDIO, WITH_USER_AUDIO, make

from qinyu_lit.data.features import FbankLFR
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.stream import ShardStream
from qinyu_lit.data.tokenizer import load_tokenizer
from qinyu_lit.prep.demo import make_demo_corpus


def run(shards: Path, layout: TokenLayout, pack_length: int) -> tuple[float, int, int]:
    stream = ShardStream(
        [str(p) for p in sorted(shards.glob("*.tar"))],
        layout,
        batch_size=1,
        shuffle_buffer=256,
        pack_length=pack_length,
        window=512,
    )
    t0 = time.perf_counter()
    tokens = samples = 0
    for batch in stream:
        tokens += int(batch["num_tokens"])
        samples += sum(len(r) for r in batch["keys"])
    return time.perf_counter() - t0, tokens, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=600, help="samples per kind")
    ap.add_argument("--pack-length", type=int, default=10_000)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="qinyu-bench-"))
    tok_dir = make_demo_corpus(work / "demo", samples_per_task=1, val_samples_per_task=1) / "tokenizer"
    layout = TokenLayout(load_tokenizer(str(tok_dir)), codebook_size=1024, front_end=FbankLFR())
    per = args.samples // len(NO_USER_AUDIO)
    text_dir, _ = make(
        work / "no_user_audio", {t: per if t != "long" else max(per // 20, 1) for t in NO_USER_AUDIO}
    )
    per = args.samples // len(WITH_USER_AUDIO)
    audio_dir, audio_s = make(work / "user_audio", {t: per for t in WITH_USER_AUDIO})

    secs, tokens, n = run(text_dir, layout, args.pack_length)
    print(
        f"without user audio: {n} samples, {tokens:,} packed tokens in {secs:.2f} s -> "
        f"{tokens / secs:,.0f} tokens/s per worker ({n / secs:,.0f} samples/s)"
    )
    secs, tokens, n = run(audio_dir, layout, args.pack_length)
    print(
        f"with user audio:    {n} samples, {audio_s:,.0f} s of user speech, {tokens:,} tokens in {secs:.2f} s -> "
        f"{audio_s / secs:,.0f}x real time per worker ({tokens / secs:,.0f} tokens/s)"
    )


if __name__ == "__main__":
    main()
