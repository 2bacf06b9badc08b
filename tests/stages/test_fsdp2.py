"""FSDP2 through Lightning on 2 CPU processes (gloo): the tiny recipe + ``recipes/strategies/fsdp2.yaml``.

The same code path as on GPUs: ``FSDP2Strategy`` builds the device mesh, the stage shards every decoder
layer and the embeddings with ``fully_shard`` in ``configure_model`` (bf16 ``MixedPrecisionPolicy`` when the
precision is bf16: the resumed run), clipping runs through ``trainer.gradient_clip_val``,
rank 0 writes one full checkpoint that an unsharded model loads, and ``--ckpt_path`` resumes from it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qinyu_lit.stages.checkpoints import stage_from_checkpoint
from qinyu_lit.stages.sharding import mixed_precision

ROOT = Path(__file__).resolve().parents[2]


def _fit(demo_dir: Path, runs: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "qinyu_lit.cli", "fit",
        "--config", str(ROOT / "recipes/tiny/sft.yaml"), "--config", str(ROOT / "recipes/strategies/fsdp2.yaml"),
        "--data.init_args.train", str(demo_dir / "train"), "--data.init_args.val", str(demo_dir / "val"),
        "--data.init_args.tokenizer", str(demo_dir / "tokenizer"), "--data.init_args.num_workers", "0",
        "--data.init_args.batch_size", "2", "--trainer.devices", "2", "--trainer.max_steps", str(steps),
        "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1",
        "--model.init_args.val_generate", "0",
        "--trainer.logger.init_args.save_dir", str(runs), "--trainer.default_root_dir", str(runs), *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=runs)


def test_fsdp2_trains_clips_checkpoints_and_resumes(demo_dir, tmp_path):
    first = _fit(demo_dir, tmp_path, 2)
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt = tmp_path / "checkpoints" / "tiny_sft" / "last.ckpt"  # the recipe's fixed dirpath, under cwd
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2
    # one full checkpoint, not shards: every tensor has its full shape and loads into an unsharded stage
    stage = stage_from_checkpoint(ckpt)
    for name, value in state["state_dict"].items():
        assert tuple(value.shape) == tuple(stage.state_dict()[name].shape), name
    # the global gradient norm (over both shards) is logged before clipping at 1.0
    events = EventAccumulator(str(tmp_path / "tiny_sft" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    norms = [e.value for e in events.Scalars("train/grad_norm")]
    assert len(norms) == 2 and all(n > 0 for n in norms)

    assert "FSDP2: 2 decoder-layer units + embeddings + root; fp32" in first.stdout
    # the resumed run in bf16: the units all-gather bf16 weights and reduce gradients in fp32
    second = _fit(demo_dir, tmp_path, 4, "--ckpt_path", "last", "--trainer.precision", "bf16-mixed")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "FSDP2: 2 decoder-layer units + embeddings + root; bf16 weights, fp32 gradient reduction" in second.stdout
    assert "Restored all states from the checkpoint" in second.stdout + second.stderr
    resumed = torch.load(ckpt, weights_only=True)
    assert resumed["global_step"] == 4


def test_bf16_precision_sets_the_mixed_precision_policy():
    policy = mixed_precision("bf16-mixed")
    assert (policy.param_dtype, policy.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert mixed_precision("bf16-true").param_dtype == torch.bfloat16
    assert mixed_precision("32-true") is None and mixed_precision("16-mixed") is None
