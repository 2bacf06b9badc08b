"""Two gloo ranks through ``qinyu-lit fit --config recipes/tiny/sft.yaml --trainer.strategy ddp``.

Rank 0 reads a text-only shard (no audio targets, speakers or user speech: the codebook heads,
codebook embeddings, speaker projector and adapter get no gradient from its batches), rank 1 a TTS
shard. Plain DDP (no ``find_unused_parameters``) and ``static_graph`` must run through: every step
touches every trainable parameter. A NaN loss on rank 1 only must skip that step on both ranks
(one all-reduce), count it in ``train/nonfinite_steps`` and let the run go on; when the guard
stops the run, every rank's message names the same last good checkpoint (rank 0 wrote it).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qinyu_lit.prep.demo import demo_samples
from qinyu_lit.prep.writer import write_shard
from tests.test_resume import ROOT, _fit

TINY_SFT = ROOT / "recipes" / "tiny" / "sft.yaml"
STEPS = 4


@pytest.fixture(scope="module")
def text_and_tts(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_tts")
    write_shard(list(demo_samples("text", 8, 5, 16, 8, 64)), root / "shard-000000.tar")  # rank 0's half
    write_shard(list(demo_samples("tts", 8, 5, 16, 8, 64)), root / "shard-000001.tar")  # rank 1's half
    return root


def _run_two_ranks(train: Path, demo_dir: Path, tmp_path: Path, *extra: str, returncode: int = 0) -> str:
    proc = _fit(
        TINY_SFT,
        "--trainer.devices", "2", "--trainer.accelerator", "cpu", "--trainer.max_steps", str(STEPS),
        "--trainer.limit_val_batches", "0", "--trainer.log_every_n_steps", "1",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--data.init_args.train", str(train), "--data.init_args.val", "null",
        "--data.init_args.tokenizer", str(demo_dir / "tokenizer"), "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2", "--data.init_args.shuffle_buffer", "0",
        "--model.init_args.val_generate", "0",
        "--trainer.callbacks+=qinyu_lit.stages.resume.SampleLedger",
        "--trainer.callbacks.path", str(tmp_path / "ledger.jsonl"),
        *extra,
        cwd=tmp_path,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"2-rank run hung (killed after 150 s)\n{out[-3000:]}")
    assert proc.returncode == returncode, out[-4000:]
    return out


def _ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_plain_ddp_with_a_text_only_rank(text_and_tts, demo_dir, tmp_path):
    _run_two_ranks(text_and_tts, demo_dir, tmp_path, "--trainer.strategy", "ddp")
    rank0, rank1 = _ledger(tmp_path / "ledger.jsonl"), _ledger(tmp_path / "ledger.jsonl.rank1")
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == list(range(1, STEPS + 1))
    assert all(k.startswith("text") for r in rank0 for k in r["keys"])
    assert all(k.startswith("tts") for r in rank1 for k in r["keys"])


def test_nan_on_one_rank_skips_the_step_on_both_with_static_graph(text_and_tts, demo_dir, tmp_path):
    out = _run_two_ranks(
        text_and_tts, demo_dir, tmp_path,
        "--trainer.strategy", "lightning.pytorch.strategies.DDPStrategy", "--trainer.strategy.static_graph", "true",
        "--trainer.callbacks+=tests._faults_hooks.NaNOnRank",
        "--trainer.callbacks.step", "1", "--trainer.callbacks.rank", "1",
    )  # fmt: skip
    rank0, rank1 = _ledger(tmp_path / "ledger.jsonl"), _ledger(tmp_path / "ledger.jsonl.rank1")
    assert [r["step"] for r in rank0] == [r["step"] for r in rank1] == list(range(1, STEPS + 1))
    assert [r["skipped"] for r in rank0] == [r["skipped"] for r in rank1] == [False, True, False, False]
    assert out.count("non-finite loss, step skipped on every rank") == 2, out[-3000:]  # printed by each rank
    events = EventAccumulator(str(next((tmp_path / "runs" / "tiny_sft").glob("version_*"))))
    events.Reload()
    counter = events.Scalars("train/nonfinite_steps")  # cumulative: 1 from the skipped step on
    assert counter[0].step == 1 and {e.value for e in counter} == {1.0}
    # rank 0 (the logging rank) had a finite loss at the skipped step; rank 1's NaN never reached the weights
    assert all(math.isfinite(e.value) for e in events.Scalars("train/loss"))
    assert all(math.isfinite(r["loss"]) for r in rank0 + rank1)


def test_the_nan_stop_message_is_the_same_on_every_rank(text_and_tts, demo_dir, tmp_path):
    _run_two_ranks(
        text_and_tts, demo_dir, tmp_path, "--trainer.strategy", "ddp", "--model.init_args.max_nonfinite_steps", "1",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath", str(tmp_path / "every"), "--trainer.callbacks.every_n_train_steps", "1",
        "--trainer.callbacks+=tests._faults_hooks.NaNOnRank",
        "--trainer.callbacks.step", "2", "--trainer.callbacks.rank", "1",
        "--trainer.callbacks+=tests._faults_hooks.RecordException", "--trainer.callbacks.path", str(tmp_path / "stop"),
        returncode=2,
    )  # fmt: skip
    rank0, rank1 = (Path(f"{tmp_path / 'stop'}.rank{r}").read_text() for r in range(2))
    assert rank0 == rank1 and f"the last good checkpoint is {tmp_path / 'every' / 'epoch=0-step=2.ckpt'}" in rank0
