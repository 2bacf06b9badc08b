"""Every shipped recipe parses through the CLI, and the paper-scale ones carry the paper's values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from qinyu_lit.cli import QinYuCLI, main
from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.stages.base import QinYuStage

RECIPES = Path(__file__).parents[1] / "recipes"
# VoiceDesign recipes have their own CLI and data (no speech-LM links): tests/stages/test_voice_design.py
ALL = sorted(str(p.relative_to(RECIPES)) for p in RECIPES.rglob("*.yaml") if "voice_design" not in p.name)
# Appendix C: steps, learning rate, tokens per optimizer step; all stages pack to 10,000 tokens
PAPER = {
    "align.yaml": ("AlignStage", 500, 1.0e-3, 1_280_000),
    "pretrain.yaml": ("PretrainStage", 8000, 6.0e-5, 2_560_000),
    "sft.yaml": ("SFTStage", 8000, 6.0e-5, 1_280_000),
}


def test_every_stage_has_a_paper_and_a_tiny_recipe():
    for stage in ("align", "pretrain", "sft", "persona_lora"):
        assert f"{stage}.yaml" in ALL and f"tiny/{stage}.yaml" in ALL


@pytest.mark.parametrize("recipe", ALL)
def test_recipe_parses_with_print_config(recipe, capsys):
    written = yaml.safe_load((RECIPES / recipe).read_text())
    # a file without a model class is an override (e.g. strategies/*.yaml): parse it on top of a stage recipe
    standalone = "class_path" in (written.get("model") or {})
    configs = [RECIPES / recipe] if standalone else [RECIPES / "sft.yaml", RECIPES / recipe]
    with pytest.raises(SystemExit) as done:
        main(["fit", *(a for c in configs for a in ("--config", str(c))), "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    for section in written:  # every class the file names survives parsing
        if isinstance(written[section], dict) and "class_path" in written[section]:
            assert printed[section]["class_path"] == written[section]["class_path"]
    if "strategy" in written.get("trainer", {}):
        assert printed["trainer"]["strategy"]["class_path"] == written["trainer"]["strategy"]["class_path"]
    # sizes shared by data and model are linked: set once on the data side, never in the model block
    assert "codebook_size" in printed["data"]["init_args"]
    assert "codebook_size" not in printed["model"]["init_args"]["net"]
    # the header: what it is, what it needs first (Needs:), the command that launches it (Launch:)
    lines = (RECIPES / recipe).read_text().splitlines()
    header = "\n".join(lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))])
    assert "# Needs:" in header and "# Launch: qinyu-lit" in header and len(header.splitlines()) >= 3, header


@pytest.mark.parametrize("recipe", list(PAPER))
def test_paper_scale_values(recipe):
    cls, steps, lr, tokens = PAPER[recipe]
    text = (RECIPES / recipe).read_text()
    cfg = yaml.safe_load(text)
    model, data, trainer = cfg["model"]["init_args"], cfg["data"]["init_args"], cfg["trainer"]
    assert cfg["model"]["class_path"] == f"qinyu_lit.stages.{cls}"
    assert (
        trainer["max_steps"] == steps
        and trainer["gradient_clip_val"] == 1.0
        and trainer["precision"].startswith("bf16")
    )
    assert model["optimizer"]["init_args"]["lr"] == lr and model["optimizer"]["init_args"]["betas"] == [
        0.9,
        0.95,
    ]
    assert (
        model["warmup_ratio"] == 0.03
        and model["net"]["backbone"] == "Qwen/Qwen3-8B"
        and model["net"]["gradient_checkpointing"]
    )
    assert data["pack_length"] == 10_000 and data["tokens_per_step"] == tokens
    packs = tokens // (data["pack_length"] * data["batch_size"] * trainer["devices"] * trainer["num_nodes"])
    assert (
        packs * data["pack_length"] * data["batch_size"] * trainer["devices"] == tokens
    )  # whole accumulations
    assert f"x {packs} accumulations" in text  # the arithmetic is written out in the comment
    assert all({"path", "weight", "name"} <= set(src) for src in data["train"])


def test_official_script_differences_are_noted():
    assert "2000 steps" in (RECIPES / "align.yaml").read_text()
    sft = (RECIPES / "sft.yaml").read_text()
    assert "12K steps" in sft and "5e-5" in sft and "weight decay 0.1" in sft


def test_mixture_weights_follow_vita_audio_table_2():
    weights = {r: {s["name"]: s["weight"] for s in yaml.safe_load((RECIPES / r).read_text())["data"]["init_args"]["train"]}
               for r in PAPER}  # fmt: skip
    assert weights["align.yaml"] == {"asr": 0.1, "sqa": 0.1}  # paper: 10% of the pretraining data
    assert set(weights["pretrain.yaml"].values()) == {1.0}
    sft = weights["sft.yaml"]
    assert {sft[k] for k in ("conversation", "roleplay", "singing")} == {2.0}
    assert {sft[k] for k in ("asr", "tts", "sqa", "text")} == {0.05}


@pytest.mark.parametrize(
    ("kind", "encoder", "front_end", "bins"),
    [
        ("whisper", {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "num_mel_bins": 128},
         "whisper", 128),  # Whisper large-v3 reads 128 mel bins
        ("fun_asr_nano", {"hidden_size": 32, "num_mel_bins": 80}, "fbank_lfr", 80),
        ("sense_voice", {"hidden_size": 32, "num_mel_bins": 8}, "sense_voice", 8),
    ],
)  # fmt: skip
def test_the_front_end_and_its_mel_bins_follow_the_encoder(kind, encoder, front_end, bins, tmp_path, monkeypatch):
    """data.audio_front_end and data.num_mel_bins are linked from model.net: set once, on the encoder."""
    monkeypatch.chdir(tmp_path)  # the recipe's logger and checkpoint folders
    cli = QinYuCLI(
        QinYuStage, QinYuDataModule, subclass_mode_model=True, subclass_mode_data=True, run=False,
        args=["--config", str(RECIPES / "tiny/sft.yaml"), "--model.init_args.net.audio_encoder_type", kind,
              "--model.init_args.net.audio_encoder", yaml.safe_dump(encoder, default_flow_style=True)],
    )  # fmt: skip
    assert (cli.datamodule.hparams.audio_front_end, cli.datamodule.hparams.num_mel_bins) == (front_end, bins)
    assert cli.model.net_config.audio_encoder_type == kind


def test_ctrl_c_keeps_a_checkpoint_that_ckpt_path_last_resumes(demo_dir, tmp_path):
    """SIGINT during a tiny fit: interrupted.ckpt (the full trainer state) and the resume command; then
    ``--ckpt_path last`` picks it up and the run ends at max_steps."""
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time

    import torch

    args = ["fit", "--config", str(RECIPES / "tiny" / "sft.yaml"), "--data.init_args.train", str(demo_dir / "train"),
            "--data.init_args.val", "null", "--data.init_args.tokenizer", str(demo_dir / "tokenizer"),
            "--data.init_args.num_workers", "0", "--trainer.logger.init_args.save_dir", "runs"]  # fmt: skip
    code = "import sys; from qinyu_lit.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", code, *args, "--trainer.max_steps", "1000000"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stdout.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + 240
    while not re.search(r"Epoch [1-9]", "".join(seen)) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)  # the demo fixture's 28 samples are 2 steps an epoch: epoch 1 means steps were taken
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    out = "".join(seen)
    saved = tmp_path / "checkpoints" / "tiny_sft" / "interrupted.ckpt"
    assert proc.returncode == 1 and saved.is_file(), out[-2000:]
    step = torch.load(saved, map_location="cpu", weights_only=True)["global_step"]
    assert step >= 2 and "--ckpt_path last" in out and f"interrupted at step {step}" in out
    resumed = subprocess.run([sys.executable, "-c", code, *args, "--trainer.max_steps", str(step + 2), "--ckpt_path", "last"],
                             cwd=tmp_path, capture_output=True, text=True)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "interrupted.ckpt" in resumed.stdout + resumed.stderr  # Lightning names the checkpoint it restores
    # the progress bar counts global steps against max_steps across epochs, and goes on from the resumed step
    assert re.search(r"\| \d+/1000000 \[", out) and re.search(rf"\| {step + 2}/{step + 2} \[", resumed.stdout)
    last = torch.load(tmp_path / "checkpoints" / "tiny_sft" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == step + 2
    # without --ckpt_path a rerun starts afresh: the interrupt callback never turns fit into a resume
    fresh = subprocess.run([sys.executable, "-c", code, *args, "--trainer.max_steps", "1"], cwd=tmp_path,
                           capture_output=True, text=True)  # fmt: skip
    assert fresh.returncode == 0 and "Restoring states" not in fresh.stdout + fresh.stderr, fresh.stderr[-2000:]
