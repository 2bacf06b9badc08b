"""The documented chain, end to end through the CLI: tiny align -> pretrain -> sft -> persona."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch

from qinyu_lit.cli import main
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.stages import PersonaStage, PretrainStage, SFTStage
from qinyu_lit.stages.checkpoints import load_init, stage_from_checkpoint

TINY = Path(__file__).parents[2] / "recipes" / "tiny"


def fit(recipe: str, runs: Path, demo_dir: Path, init_from: str | None, train: str, *extra: str) -> str:
    main([
        "fit", "--config", str(TINY / recipe),
        "--data.init_args.train", train, "--data.init_args.val", "null",
        "--data.init_args.tokenizer", str(demo_dir / "tokenizer"),
        "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "4",
        "--trainer.max_steps", "2", "--trainer.logger.init_args.save_dir", str(runs),
        "--model.init_args.init_from", str(init_from) if init_from else "null", *extra,
    ])  # fmt: skip
    name = recipe.removesuffix(".yaml").replace("_lora", "")
    return str(Path.cwd() / "checkpoints" / f"tiny_{name}" / "last.ckpt")  # the recipe's dirpath (relative)


def weights(ckpt: str) -> dict:
    return {k.removeprefix("model."): v for k, v in torch.load(ckpt, weights_only=True)["state_dict"].items()}


@pytest.fixture(scope="module")
def chain(demo_dir, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(runs)  # the recipes' checkpoint dirpaths (checkpoints/tiny_*) are relative
        train = str(demo_dir / "train")
        ckpts = {"align": fit("align.yaml", runs, demo_dir, None, train)}
        ckpts["pretrain"] = fit("pretrain.yaml", runs, demo_dir, ckpts["align"], train)
        ckpts["sft"] = fit("sft.yaml", runs, demo_dir, ckpts["pretrain"], train)
        persona_src, persona = runs / "captain_src", runs / "captain"
        main(["demo-persona", str(persona_src), "--dialogues", "8"])
        main(
            ["persona-data", str(persona_src), str(persona), "--codec_name", "demo-rule", "--codebook_size", "64"]
        )
        ckpts["persona"] = fit("persona_lora.yaml", runs, demo_dir, ckpts["sft"], str(persona / "train"),
                               "--model.init_args.persona_card", str(persona / "persona.json"))  # fmt: skip
        return ckpts


def test_each_stage_starts_from_the_previous_one(chain):
    """Stage N's weights before its first step are exactly stage N-1's final weights."""
    for prev, stage_cls in (("align", PretrainStage), ("pretrain", SFTStage)):
        stage = stage_cls(stage_from_checkpoint(chain[prev]).net_config, init_from=chain[prev])
        stage.configure_model()
        mine, theirs = stage.model.state_dict(), weights(chain[prev])
        assert set(mine) == set(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine), prev
    # and training moved them on: the adapter differs between align and pretrain
    assert not torch.equal(
        weights(chain["align"])["adapter.1.weight"], weights(chain["pretrain"])["adapter.1.weight"]
    )
    # the audio encoder is frozen along the whole chain: bit-identical from align to persona
    align, sft = weights(chain["align"]), weights(chain["sft"])
    enc = [k for k in align if k.startswith("audio_encoder.")]
    assert enc and all(torch.equal(align[k], sft[k]) for k in enc)


def test_persona_checkpoint_is_lora_on_the_sft_weights(chain):
    persona = stage_from_checkpoint(chain["persona"])
    assert isinstance(persona, PersonaStage) and persona.persona_card["system_prompt"].startswith(
        "You are Captain Mira"
    )
    sft = weights(chain["sft"])
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v for k, v in persona.model.state_dict().items()
            if "lora_" not in k}  # fmt: skip
    # what the recipe trains besides LoRA (e.g. the codebook heads for a new voice) moved; everything else is SFT's
    trained = {k for k in base if any(fnmatch.fnmatch(k, p) for p in persona.trainable_patterns)}
    assert set(base) == set(sft) and all(torch.equal(base[k], sft[k]) for k in sft if k not in trained)
    assert all(not torch.equal(base[k], sft[k]) for k in trained)
    assert len(trained) < len(base) // 4  # a LoRA persona: most of the model is the SFT model, bit for bit


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("speaker_dim", 32, "speaker_dim"),
        ("codebook_size", 128, "codebook_size"),
        ("num_codebooks", 4, "num_codebooks"),
    ],
)
def test_mismatched_sizes_fail_with_the_field_named(chain, field, value, message):
    net = stage_from_checkpoint(chain["sft"]).net_config
    setattr(net, field, value)
    with pytest.raises(ValueError, match=f"{message} is .* there but {value}"):
        load_init(QinYuModel(net), chain["sft"])


def test_mismatched_vocabulary_fails_clearly(chain):
    net = stage_from_checkpoint(chain["sft"]).net_config
    net.backbone = dict(net.backbone, vocab_size=1024)
    with pytest.raises(ValueError, match="vocabulary size .* is 768 there but 1024"):
        load_init(QinYuModel(net), chain["sft"])


def test_persona_adapter_replies_in_character_from_the_cli(chain, tmp_path, capsys):
    adapter = tmp_path / "captain"
    main(["export", chain["persona"], str(adapter), "--adapter_only", "true"])
    main(["persona-reply", chain["sft"], str(adapter), "hello world", "--max_new_positions", "6",
          "--out", str(tmp_path / "reply.npy")])  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("[Captain Mira]") == 1  # the card travelled: ckpt -> adapter dir
    assert (tmp_path / "reply.txt").is_file()
    if (tmp_path / "reply.npy").is_file():  # codes [8, frames] when the 6 positions held speech
        codes = np.load(tmp_path / "reply.npy")
        assert codes.ndim == 2 and codes.shape[0] == 8 and codes.shape[1] > 0
    else:  # never an empty .npy: the reply says why there is none
        assert "without speech" in out and "wrote" in out
