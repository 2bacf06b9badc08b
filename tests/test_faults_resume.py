"""``--ckpt_path last`` works for every shipped recipe, and the run's counters survive it.

Every recipe's ``last.ckpt`` lands in a fixed directory (a ModelCheckpoint without ``dirpath``
writes into the logger's new ``version_N`` and a resumed run never finds it). The tiny SFT recipe
is resumed through the CLI: the second run starts after the first one's last step, and the data
counters (``data/samples/*``, ``data/tokens/*``, ``data/skipped``, ``train/nonfinite_steps``)
continue instead of restarting from 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from qinyu_lit.cli import main
from tests.test_recipes import ALL, RECIPES
from tests.test_resume import _fit

STANDALONE = [r for r in ALL if "class_path" in (yaml.safe_load((RECIPES / r).read_text()).get("model") or {})]


@pytest.mark.parametrize("recipe", STANDALONE)
def test_last_checkpoint_lands_in_a_fixed_directory(recipe, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(RECIPES / recipe), "--print_config"])
    callbacks = yaml.safe_load(capsys.readouterr().out)["trainer"]["callbacks"]
    lasts = [cb["init_args"] for cb in callbacks if cb["class_path"].endswith("ModelCheckpoint")
             and cb["init_args"].get("save_last")]  # fmt: skip
    assert lasts, f"{recipe}: no ModelCheckpoint with save_last"
    for args in lasts:
        assert args.get("dirpath") and "version_" not in args["dirpath"], f"{recipe}: {args}"


def _ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _tiny_sft(demo_dir: Path, run: Path, steps: int, *extra: str):
    return _fit(
        RECIPES / "tiny" / "sft.yaml",
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
        "--trainer.logger.init_args.save_dir", str(run / "runs"),
        "--data.init_args.train", str(demo_dir / "train"), "--data.init_args.val", str(demo_dir / "val"),
        "--data.init_args.tokenizer", str(demo_dir / "tokenizer"), "--data.init_args.num_workers", "0",
        "--model.init_args.val_generate", "0",
        "--trainer.callbacks+=qinyu_lit.stages.resume.SampleLedger", "--trainer.callbacks.path", str(run / "ledger.jsonl"),
        *extra,
        cwd=run,
    )  # fmt: skip


def test_tiny_recipe_resumes_with_its_counters(demo_dir, tmp_path):
    first = _tiny_sft(demo_dir, tmp_path, 4)
    out, _ = first.communicate(timeout=240)
    assert first.returncode == 0, out[-3000:]
    ckpt_dir = tmp_path / "checkpoints" / "tiny_sft"  # the recipe's dirpath, relative to the working directory
    assert torch.load(ckpt_dir / "last.ckpt", weights_only=True)["global_step"] == 4
    second = _tiny_sft(demo_dir, tmp_path, 6, "--ckpt_path", "last")
    out, _ = second.communicate(timeout=240)
    assert second.returncode == 0, out[-3000:]
    assert "no last checkpoint" not in out and "nothing to resume from" not in out

    rows = _ledger(tmp_path / "ledger.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6], "the second run continues after step 4"
    ckpt = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    (counts,) = ckpt["qinyu_counters"]["ranks"]
    keys = [k for r in rows for k in r["keys"]]
    assert sum(v for k, v in counts.items() if k.startswith("samples/")) == len(keys)
    assert "skipped" in counts and all(v > 0 for k, v in counts.items() if k.startswith("tokens/"))


def test_missing_last_checkpoint_says_why(demo_dir, tmp_path):
    # a callback without dirpath: say that, instead of Lightning's hint to set save_last (which is set)
    run = _fit(
        RECIPES / "tiny" / "sft.yaml", "--ckpt_path", "last", "--trainer.max_steps", "1",
        "--trainer.limit_val_batches", "0", "--trainer.logger", "false", "--trainer.callbacks",
        '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"save_last": true}}]',
        "--data.init_args.train", str(demo_dir / "train"), "--data.init_args.val", "null",
        "--data.init_args.tokenizer", str(demo_dir / "tokenizer"), "--data.init_args.num_workers", "0",
        cwd=tmp_path,
    )  # fmt: skip
    out, _ = run.communicate(timeout=240)
    assert run.returncode == 0, out[-3000:]
    assert "nothing to resume from" in out and "has no dirpath" in out, out[-3000:]
    assert "HINT: Set `ModelCheckpoint(..., save_last=True)`" not in out
