"""On a GPU: the tiny SFT recipe in bf16, alone and with the DDP and FSDP strategy overrides -
clipping at 1.0, a checkpoint, ``--ckpt_path last`` resume, export.

Each run is a subprocess (``qinyu-lit fit``) so process groups never leak between runs.
Run with ``python -m pytest -m gpu tests/gpu``; skipped where there is no CUDA device.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from qinyu_lit.model.qinyu import QinYuModel

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
RECIPES = Path(__file__).parents[2] / "recipes"


def _fit(config: Path, overrides: list[str], steps: int, *extra: str) -> None:
    args = ["fit", "--config", str(config), *(a for o in overrides for a in ("--config", str(RECIPES / o))),
            "--trainer.max_steps", str(steps), *extra]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", "from qinyu_lit.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _tiny_gpu_recipe(demo_dir: Path, run: Path) -> Path:
    cfg = yaml.safe_load((RECIPES / "tiny" / "sft.yaml").read_text())
    cfg["trainer"].update(
        accelerator="gpu", devices=1, precision="bf16-mixed", logger=False, limit_val_batches=0,
        default_root_dir=str(run), gradient_clip_val=1.0,
        callbacks=[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {"dirpath": str(run / "ckpt"), "save_last": True, "every_n_train_steps": 2}}],
    )  # fmt: skip
    cfg["trainer"].pop("val_check_interval")
    cfg["data"]["init_args"].update(
        train=str(demo_dir / "train"), val=None, tokenizer=str(demo_dir / "tokenizer"), num_workers=0
    )
    path = run / "tiny_gpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("overrides", [[], ["strategies/ddp.yaml"], ["strategies/fsdp.yaml"]], ids=["single", "ddp", "fsdp"])
def test_tiny_recipe_trains_clips_resumes_and_exports(overrides, demo_dir, tmp_path):
    config = _tiny_gpu_recipe(demo_dir, tmp_path)
    _fit(config, overrides, 4)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4
    _fit(config, overrides, 6, "--ckpt_path", "last")
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 6
    done = subprocess.run([sys.executable, "-c", "from qinyu_lit.cli import main; main()", "export", str(last),
                           str(tmp_path / "export")], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    model = QinYuModel.from_pretrained(str(tmp_path / "export"))
    assert all(torch.isfinite(p).all() for p in model.parameters())
