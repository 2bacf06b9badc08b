"""From the release to a talking character through the CLI: convert-official -> LoRA persona fit with
recipes/tiny/persona_lora_official.yaml (official token layout, loss, pads, heads) -> generate."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from qinyu_lit.cli import main
from qinyu_lit.model.tiny import write_tiny_release
from qinyu_lit.prep.persona_data import DEMO_RULE, build_persona, make_demo_persona
from qinyu_lit.stages.checkpoints import stage_from_checkpoint

RECIPE = Path(__file__).parents[2] / "recipes" / "tiny" / "persona_lora_official.yaml"


def test_convert_lora_tune_and_generate_through_the_cli(tmp_path, capsys):
    release = write_tiny_release(tmp_path / "release")  # 8 x 64 codes, as the demo persona's rule codes
    main(["convert-official", str(release), str(tmp_path / "export")])
    src = make_demo_persona(tmp_path / "captain_src")
    # the official layout wants a user voice before user speech, which persona folders do not carry: text questions
    dialogues = [json.loads(line) for line in (src / "dialogues.jsonl").read_text().splitlines()]
    for d in dialogues:
        d["turns"][0] = {"role": "user", "text": "how was the voyage?"}
    (src / "dialogues.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dialogues))
    build_persona(src, tmp_path / "captain", DEMO_RULE)
    ckpt_dir = tmp_path / "ckpt"
    main([
        "fit", "--config", str(RECIPE), "--trainer.max_steps", "2", "--trainer.logger", "false",
        "--trainer.callbacks.init_args.dirpath", str(ckpt_dir), "--trainer.callbacks.init_args.every_n_train_steps", "2",
        "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--model.init_args.net.backbone", str(tmp_path / "export" / "backbone"),
        "--model.init_args.init_from", str(tmp_path / "export"),
        "--model.init_args.persona_card", str(tmp_path / "captain" / "persona.json"),
        "--data.init_args.train", str(tmp_path / "captain" / "train"),
        "--data.init_args.tokenizer", str(tmp_path / "export" / "tokenizer"),
    ])  # fmt: skip
    ckpt = ckpt_dir / "last.ckpt"
    stage = stage_from_checkpoint(ckpt)
    net = stage.model.config
    assert (net.token_layout, net.heads, net.delay_pads, net.loss) == ("official", "shared", "positional", "official")
    trained = {n for n, p in stage.model.named_parameters() if "lora_" in n}
    assert trained and all(".base_layer." not in n for n in trained)
    # the LoRA moved away from the release; everything else is the converted release, bit for bit
    base = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    assert any(float(v.abs().sum()) > 0 for k, v in base.items() if "lora_B" in k)
    capsys.readouterr()
    main(["generate", str(ckpt), "--text", "Hello captain", "--out", str(tmp_path / "reply"),
          "--max_new_positions", "12"])  # fmt: skip
    printed = capsys.readouterr().out
    assert "persona card" in printed and (tmp_path / "reply.txt").is_file()
    # codes when the 12 positions held speech; never an empty .npy: otherwise the reply says why
    assert (tmp_path / "reply.npy").is_file() or "without speech" in printed
