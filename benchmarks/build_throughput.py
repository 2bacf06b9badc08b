"""Shard-build throughput of ``qinyu-lit data build``, in audio-seconds per second per core.

Writes a synthetic corpus (real WAV/FLAC files at mixed rates, stereo among them: user question
+ assistant answer per row), then builds it with

* the tiny random Mimi (``codecs.TINY_MIMI``, ~0.4M parameters): the cost of everything around
  the codec (reading, resampling, FLAC, tar writing, token counting);
* the full-size Mimi architecture (``MimiConfig()``, ~79M parameters, random weights): the
  codec cost of a real build (pretrained ``kyutai/mimi`` has the same architecture and cost).

Each row is timed end to end by ``ShardBuilder.build_shard`` after the models are loaded
(load time printed separately). ``--workers N`` also times a whole ``build`` with N worker
processes, start-up included. Default run: under a minute on one core.

    python benchmarks/build_throughput.py [--tiny_seconds 120] [--full_seconds 30] [--threads 1] [--workers 0] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from qinyu_lit.prep.build import BuildOptions, ShardBuilder, build
from qinyu_lit.prep.demo import make_demo_corpus
from qinyu_lit.prep.manifest import scan_manifest
from qinyu_lit.tiny_configs import TINY_MIMI

KINDS = [(16000, 1, "WAV"), (44100, 2, "FLAC"), (24000, 1, "FLAC"), (22050, 2, "WAV")]


def make_corpus(root: Path, seconds: float, clip_seconds: float = 5.0) -> Path:
    """Rows of (user question, assistant answer) clips until ``seconds`` of audio are written."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows, total, i = [], 0.0, 0
    while total < seconds:
        names = []
        for role in ("q", "a"):
            sr, ch, fmt = KINDS[(i + len(names)) % len(KINDS)]
            n = int(clip_seconds * sr)
            wave = 0.2 * np.sin(
                2 * np.pi * (150 + 30 * (i % 9)) * np.arange(n) / sr
            ) + 0.01 * rng.standard_normal(n)
            name = f"{role}{i}.{fmt.lower()}"
            sf.write(root / name, np.repeat(wave[:, None], ch, 1), sr, format=fmt, subtype="PCM_16")
            names.append(name)
            total += clip_seconds
        rows.append({"key": f"r{i}", "task": "conversation", "turns": [
            {"role": "user", "audio": names[0]}, {"role": "assistant", "text": "a short spoken answer", "audio": names[1]}]})  # fmt: skip
        i += 1
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def time_builder(label: str, codec: dict, manifest: Path, tokenizer: Path, out: Path, args) -> None:
    options = BuildOptions(
        manifest=str(manifest), tokenizer=str(tokenizer), codec=codec, codec_class="qinyu_lit.prep.codecs.MimiCodec",
        num_quantizers=8, speaker_encoder=None, user_speakers=False, user_sample_rate=16000,
        codec_batch_size=args.codec_batch_size, device=args.device, seed=0, strict=True, threads=args.threads,
    )  # fmt: skip
    start = time.perf_counter()
    builder = ShardBuilder(options)
    loaded = time.perf_counter() - start
    rows = scan_manifest(manifest, max_audio_seconds=600).rows
    builder.build_shard(
        rows[:1], out / "warmup.tar", {}
    )  # first-call costs (allocator, kernels) out of the timing
    start = time.perf_counter()
    stats = builder.build_shard(rows, out / f"{label}.tar", {})
    elapsed = time.perf_counter() - start
    cores = args.threads if args.device == "cpu" else 1
    rate = stats["audio_seconds"] / elapsed
    unit = "core" if args.device == "cpu" else "GPU"
    print(
        f"{label:>10}: {stats['audio_seconds']:.0f} audio-s in {elapsed:.1f} s = {rate:.1f} audio-s/s "
        f"on {cores} {'thread' if args.device == 'cpu' else args.device} -> {rate / cores:.1f} audio-s/s per {unit} "
        f"(model load {loaded:.1f} s, {stats['code_frames']} code frames)"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny_seconds", type=float, default=120.0, help="audio seconds built with the tiny Mimi")
    p.add_argument(
        "--full_seconds", type=float, default=30.0, help="audio seconds built with the full-size Mimi"
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads (cores) for the in-process timing")
    p.add_argument(
        "--workers", type=int, default=0, help="also time a whole build with this many worker processes"
    )
    p.add_argument("--codec_batch_size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer = make_demo_corpus(tmp / "demo", samples_per_task=1, val_samples_per_task=1) / "tokenizer"
        print(
            f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}, codec batch {args.codec_batch_size}"
        )
        print(
            "audio-s = user speech (resampled, stored as FLAC) + assistant speech (through the codec), half each"
        )
        for label, codec, seconds in (
            ("tiny-mimi", dict(TINY_MIMI), args.tiny_seconds),
            ("full-mimi", {}, args.full_seconds),
        ):
            if seconds > 0:
                manifest = make_corpus(tmp / label, seconds)
                time_builder(label, codec, manifest, tokenizer, tmp, args)
        if args.workers > 0:
            manifest = make_corpus(tmp / "pool", args.tiny_seconds)
            report = build(
                manifest=str(manifest), out=str(tmp / "pool-out"), tokenizer=str(tokenizer), codec=dict(TINY_MIMI),
                samples_per_shard=4, workers=args.workers, threads=1, progress=False,
            )  # fmt: skip
            rate = report.audio_seconds / report.seconds
            print(
                f"{'pool':>10}: tiny Mimi, {args.workers} workers x 1 thread, whole build in {report.seconds:.1f} s "
                f"incl. each worker's start-up (imports, models): {rate:.1f} audio-s/s -> {rate / args.workers:.1f} "
                "audio-s/s per core; start-up is paid once, so use thousands of audio-seconds to see steady scaling"
            )


if __name__ == "__main__":
    main()
