"""Loader memory: peak RSS of one worker streaming 10 -> 1000 shards (it should stay flat).

Each run is a fresh process that streams every shard once (packed to 10K); shards are copies of a
small demo corpus, so work per shard is equal and only the shard count grows. Memory that grows
with the corpus would show as a rising peak; the epoch plan costs 12 bytes per sample.

    python benchmarks/loader_memory.py [--counts 10 100 1000]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def child(shard_dir: str, tokenizer: str) -> None:
    from qinyu_lit.data.features import FbankLFR
    from qinyu_lit.data.layout import TokenLayout
    from qinyu_lit.data.stream import ShardStream
    from qinyu_lit.data.tokenizer import load_tokenizer

    layout = TokenLayout(load_tokenizer(tokenizer), codebook_size=64, front_end=FbankLFR())
    shards = sorted(str(p) for p in Path(shard_dir).glob("*.tar"))
    stream = ShardStream(shards, layout, batch_size=1, shuffle_buffer=256, pack_length=10_000, window=512)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    samples = sum(sum(len(r) for r in b["keys"]) for b in stream)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{len(shards)} {samples} {before / 1024:.1f} {peak / 1024:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    from qinyu_lit.prep.demo import make_demo_corpus

    work = Path(tempfile.mkdtemp(prefix="qinyu-mem-"))
    demo = make_demo_corpus(work / "demo", samples_per_task=8, val_samples_per_task=1, samples_per_shard=8)
    seeds = sorted((demo / "train").glob("*.tar"))
    print(f"{'shards':>7}{'samples':>9}{'RSS before (MiB)':>18}{'peak RSS (MiB)':>16}{'growth':>9}")
    for count in args.counts:
        d = work / f"n{count}"
        d.mkdir()
        for i in range(count):
            shutil.copyfile(seeds[i % len(seeds)], d / f"shard-{i:06d}.tar")
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(d), str(demo / "tokenizer")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        n, samples, before, peak = int(out[0]), int(out[1]), float(out[2]), float(out[3])
        print(f"{n:>7}{samples:>9}{before:>18.1f}{peak:>16.1f}{peak - before:>9.1f}")
        shutil.rmtree(d)


if __name__ == "__main__":
    main()
