"""FSDP2 through Lightning on 2 CPU processes (gloo): the tiny recipe + ``recipes/strategies/fsdp2.yaml``.

The same code path as on GPUs: ``FSDP2Strategy`` builds the device mesh, the stage shards every decoder
layer with ``fully_shard`` in ``configure_model``, clipping runs through ``trainer.gradient_clip_val``,
rank 0 writes one full checkpoint that an unsharded model loads, and ``--ckpt_path`` resumes from it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qinyu_lit.stages.checkpoints import stage_from_checkpoint

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

    second = _fit(demo_dir, tmp_path, 4, "--ckpt_path", "last")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Restored all states from the checkpoint" in second.stdout + second.stderr
    resumed = torch.load(ckpt, weights_only=True)
    assert resumed["global_step"] == 4
