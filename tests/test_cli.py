"""The README's main job, end to end through the console entry point (short)."""

import glob
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qinyu_lit.cli import main

TINY_SFT = str(Path(__file__).parents[1] / "recipes" / "tiny" / "sft.yaml")


def test_tiny_sft_fit_writes_tensorboard_and_a_checkpoint(demo_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recipe's checkpoint dirpath (checkpoints/tiny_sft) is relative
    main([
        "fit", "--config", TINY_SFT,
        "--data.init_args.train", str(demo_dir / "train"),
        "--data.init_args.val", str(demo_dir / "val"),
        "--data.init_args.tokenizer", str(demo_dir / "tokenizer"),
        "--data.init_args.num_workers", "0",
        "--trainer.max_steps", "6", "--trainer.val_check_interval", "3", "--trainer.log_every_n_steps", "1",
        "--trainer.logger.init_args.save_dir", str(tmp_path),
    ])  # fmt: skip
    run = glob.glob(str(tmp_path / "tiny_sft" / "version_*"))[0]
    assert (tmp_path / "checkpoints" / "tiny_sft" / "last.ckpt").is_file()
    events = EventAccumulator(run)
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/text_loss", "train/audio_loss", "train/grad_norm", "val/loss"}
    expected |= {"train/device/items_per_sec", "train/device/flops_per_sec"}  # ThroughputMonitor (stages/throughput.py)
    expected |= {f"train_codebook/loss_{j}" for j in range(8)} | {f"val_codebook/acc_{j}" for j in range(8)}
    assert expected <= tags, expected - tags
    assert any(t.startswith("lr-AdamW") for t in tags)


def test_print_config_resolves_links(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", TINY_SFT, "--print_config"])
    text = capsys.readouterr().out
    assert "class_path: qinyu_lit.stages.SFTStage" in text
    assert "codebook_size: 64" in text and "betas:" in text
