"""On a GPU: a DPO step on packed pairs makes no synchronising CUDA call, a pair's log-probabilities are the
same packed or alone on the varlen kernel, and the tiny DPO recipe trains in bf16 (LoRA reference, and full
fine-tuning with a frozen copy under FSDP).

The CPU twins are in tests/stages/test_dpo.py. Run with ``python -m pytest -m gpu tests/gpu``; skipped where
there is no CUDA device.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.model.attention import VARLEN
from qinyu_lit.model.reply_logprob import reply_logprobs
from qinyu_lit.prep.demo_pairs import demo_pairs_cmd
from qinyu_lit.stages.dpo import DPOStage

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
RECIPES = Path(__file__).parents[2] / "recipes"


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs")
    demo_pairs_cmd(str(out), count=32, val_count=8)
    return out


def pair_batch(demo_dir, pairs_dir, pack_length: int | None):
    dm = QinYuDataModule(str(pairs_dir / "train"), str(pairs_dir / "val"), tokenizer=str(demo_dir / "tokenizer"),
                         codebook_size=64, batch_size=2 if pack_length else 8, pack_length=pack_length)  # fmt: skip
    return move_data_to_device(next(iter(dm.val_dataloader())), torch.device("cuda"))


@pytest.mark.parametrize("attn", [VARLEN, "sdpa"])
def test_a_dpo_step_makes_no_cuda_sync(tiny_net, demo_dir, pairs_dir, attn):
    stage = DPOStage(dataclasses.replace(tiny_net, attn_implementation=attn, loss_chunk_size=16), lora_r=4, sft_weight=1.0)
    stage.configure_model()
    stage.cuda().train()
    batch = pair_batch(demo_dir, pairs_dir, pack_length=256)
    torch.cuda.synchronize()
    for step in range(2):  # the first step may initialise kernels; both must be sync-free
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                terms = stage.dpo_step(batch)
                loss = terms["loss"].mean() + terms["sft"]
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(loss).item(), step


def test_pair_logprobs_are_the_same_packed_or_alone_on_varlen(tiny_net, demo_dir, pairs_dir):
    torch.manual_seed(0)
    stage = DPOStage(dataclasses.replace(tiny_net, attn_implementation=VARLEN))
    stage.configure_model()
    model = stage.model.cuda().eval()
    alone, packed = pair_batch(demo_dir, pairs_dir, None), pair_batch(demo_dir, pairs_dir, 512)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        a, p = reply_logprobs(model, alone), reply_logprobs(model, packed)
    want = {k: (a[c].item(), a[r].item()) for k, c, r in zip(alone["pairs"]["keys"], alone["pairs"]["chosen"], alone["pairs"]["rejected"], strict=True)}
    shared = [(k, p[c].item(), p[r].item()) for k, c, r in zip(packed["pairs"]["keys"], packed["pairs"]["chosen"], packed["pairs"]["rejected"], strict=True) if k in want]
    assert len(shared) >= 2
    for key, c, r in shared:  # bf16 compute: sums of a few dozen positions agree to ~1e-2 relative
        assert (c, r) == pytest.approx(want[key], rel=2e-2, abs=0.1), key


@pytest.mark.parametrize("extra", [["--model.init_args.lora_r", "4"], ["--config", str(RECIPES / "strategies" / "fsdp.yaml")]],
                         ids=["lora-reference", "fsdp-frozen-copy"])  # fmt: skip
def test_tiny_dpo_recipe_trains_in_bf16(demo_dir, pairs_dir, tmp_path, extra):
    args = ["fit", "--config", str(RECIPES / "tiny" / "dpo.yaml"), *extra, "--trainer.accelerator", "gpu",
            "--trainer.precision", "bf16-mixed", "--trainer.max_steps", "6", "--trainer.val_check_interval", "3",
            "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), "--model.init_args.init_from", "null",
            "--data.init_args.train", str(pairs_dir / "train"), "--data.init_args.val", str(pairs_dir / "val"),
            "--data.init_args.tokenizer", str(demo_dir / "tokenizer")]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", "from qinyu_lit.cli import main; main()", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "tiny_dpo" / "last.ckpt").is_file()
