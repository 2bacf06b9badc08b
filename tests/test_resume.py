"""Kill a real ``qinyu-lit fit`` with SIGKILL, resume with ``--ckpt_path last``: same samples, same losses.

Three subprocess runs of the same tiny recipe and seed: A uninterrupted for 12 steps (two
epochs of the demo corpus, 2 data-loader workers), B killed by SIGKILL after step 6 (its last
checkpoint is step 4), C resuming B. Every step of C must see the keys A saw at that step and
reproduce A's loss; steps 1-4 of B must match A too, and the checkpoint loads with
``weights_only=True``. (A kill in the middle of a save: tests/test_faults_checkpoints.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from qinyu_lit.tiny_configs import TINY_FUN_ASR_NANO as TINY_ENCODER
from qinyu_lit.tiny_configs import tiny_backbone

ROOT = Path(__file__).resolve().parents[1]
STEPS, KILL, EVERY = 12, 6, 4


def _config(demo_dir: Path, run_dir: Path, kill: int | None) -> Path:
    callbacks = [
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str(run_dir / "ckpt"),
                "save_last": True,
                "every_n_train_steps": EVERY,
                "save_top_k": -1,
            },
        },
        {"class_path": "qinyu_lit.stages.resume.SampleLedger", "init_args": {"path": str(run_dir / "ledger.jsonl")}},
    ]
    if kill:
        callbacks.append({"class_path": "tests._resume_kill.KillAt", "init_args": {"step": kill}})
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": STEPS,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
            "callbacks": callbacks,
            "default_root_dir": str(run_dir),
        },
        "model": {
            "class_path": "qinyu_lit.stages.SFTStage",
            "init_args": {
                "net": {
                    "backbone": tiny_backbone(),
                    "audio_encoder": dict(TINY_ENCODER),
                    "speaker_dim": 16,
                },
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 3e-3}},
            },
        },
        "data": {
            "class_path": "qinyu_lit.data.datamodule.QinYuDataModule",
            "init_args": {
                "train": str(demo_dir / "train"),
                "tokenizer": str(demo_dir / "tokenizer"),
                "codebook_size": 64,
                "batch_size": 4,
                "num_workers": 2,
                "shuffle_buffer": 8,
                "seed": 3,
            },
        },
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fit(config: Path, *extra: str, cwd: Path = ROOT) -> subprocess.Popen:
    """``qinyu-lit fit --config CONFIG EXTRA...`` in its own process group (kill it with ``os.killpg``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "qinyu_lit.cli", "fit", "--config", str(config), *extra]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _ledger(path: Path) -> dict[int, dict]:
    return {row["step"]: row for row in map(json.loads, path.read_text().splitlines())}


def test_sigkill_then_resume_matches_uninterrupted_run(demo_dir, tmp_path):
    a = _fit(_config(demo_dir, tmp_path / "a", None))
    b = _fit(_config(demo_dir, tmp_path / "b", KILL))
    out_a, _ = a.communicate(timeout=240)
    out_b, _ = b.communicate(timeout=240)
    assert a.returncode == 0, out_a[-3000:]
    assert b.returncode == -9, f"run B should die by SIGKILL, got {b.returncode}\n{out_b[-3000:]}"
    before = _ledger(tmp_path / "b" / "ledger.jsonl")
    assert max(before) == KILL
    c = _fit(_config(demo_dir, tmp_path / "b", None), "--ckpt_path", "last")
    out_c, _ = c.communicate(timeout=240)
    assert c.returncode == 0, out_c[-3000:]

    ref = _ledger(tmp_path / "a" / "ledger.jsonl")
    assert sorted(ref) == list(range(1, STEPS + 1))
    rows = [json.loads(r) for r in (tmp_path / "b" / "ledger.jsonl").read_text().splitlines()]
    resumed = {r["step"]: r for r in rows[KILL:]}  # what C wrote, after B's KILL lines
    assert sorted(resumed) == list(range(EVERY + 1, STEPS + 1)), (
        "resume starts right after the last checkpoint"
    )
    for step in range(1, STEPS + 1):
        got = before[step] if step <= EVERY else resumed[step]
        assert got["keys"] == ref[step]["keys"], f"step {step}: samples differ from the uninterrupted run"
        assert got["loss"] == pytest.approx(ref[step]["loss"], rel=1e-4, abs=1e-5), (
            f"step {step}: loss differs"
        )
    # epoch 0 = 2 workers x 14 samples = 2 x (3 batches of 4 + 1 of 2): every key exactly once
    per_epoch = [k for s in range(1, 9) for k in ref[s]["keys"]]
    assert len(per_epoch) == len(set(per_epoch)) == 28

    ckpt = torch.load(tmp_path / "b" / "ckpt" / "last.ckpt", weights_only=True)
    state = ckpt["QinYuDataModule"]
    assert state["epoch"] == 1 and state["num_workers"] == 2
