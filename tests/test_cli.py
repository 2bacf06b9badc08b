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


# the full key set of the public Qwen3-8B config.json (sizes shrunk; every other value as published)
QWEN3_8B_CONFIG = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 24, "hidden_act": "silu", "hidden_size": 96,
    "initializer_range": 0.02, "intermediate_size": 256, "max_position_embeddings": 40960, "max_window_layers": 36,
    "model_type": "qwen3", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 768,
}  # fmt: skip


def test_a_backbone_copied_from_a_hub_config_json_builds_as_transformers_reads_it(demo_dir, tmp_path, monkeypatch):
    """rope_theta / rope_scaling (legacy names) reach the rotary embedding; the dtype key warns, net.dtype decides."""
    import json

    import torch

    from qinyu_lit.stages.checkpoints import stage_from_checkpoint

    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"net.backbone.torch_dtype: bfloat16 is not used: the weights are float32"):
        main([
            "fit", "--config", TINY_SFT,
            "--model.init_args.net.backbone", json.dumps(QWEN3_8B_CONFIG),  # JSON null -> None
            "--data.init_args.train", str(demo_dir / "train"), "--data.init_args.val", "null",
            "--data.init_args.tokenizer", str(demo_dir / "tokenizer"), "--data.init_args.num_workers", "0",
            "--trainer.max_steps", "1", "--trainer.logger.init_args.save_dir", str(tmp_path),
        ])  # fmt: skip
    ckpt = tmp_path / "checkpoints" / "tiny_sft" / "last.ckpt"  # the recipe's relative dirpath
    backbone = stage_from_checkpoint(str(ckpt)).model.backbone
    assert backbone.config.rope_parameters["rope_theta"] == 1000000  # not the default 10,000
    inv_freq = backbone.model.rotary_emb.inv_freq
    torch.testing.assert_close(inv_freq[1], torch.tensor(1e6 ** (-2 / 24)))
    assert backbone.dtype == torch.float32  # net.dtype (None = float32), not the dict's bfloat16
