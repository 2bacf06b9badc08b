"""Export round trips: identical logits after `qinyu-lit export`; persona adapters load with plain peft."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from qinyu_lit.cli import main
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.weights import save_exported
from qinyu_lit.stages import AlignStage, PersonaStage, SFTStage
from qinyu_lit.stages.checkpoints import stage_from_checkpoint

from .helpers import demo_data, fit_steps


@pytest.fixture(scope="module")
def batch(demo_dir):
    return next(iter(demo_data(demo_dir, batch_size=2).train_dataloader()))


@torch.no_grad()
def logits(model: QinYuModel, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    hidden = model.hidden_states(batch)
    return model.head0_logits(hidden), model.code_logits(hidden)


def trained(stage, demo_dir, tmp_path, name: str):
    stage.configure_model()
    trainer = fit_steps(stage, demo_dir, steps=2)
    ckpt = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(ckpt)
    return str(ckpt)


def test_cli_export_round_trip_gives_identical_logits(tiny_net, demo_dir, batch, tmp_path):
    ckpt = trained(SFTStage(tiny_net), demo_dir, tmp_path, "sft")
    main(["export", ckpt, str(tmp_path / "out")])
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "backbone",
        "tokenizer",
        "qinyu_parts.safetensors",
        "qinyu_config.json",
    }
    before = logits(stage_from_checkpoint(ckpt).model, batch)
    after = logits(QinYuModel.from_pretrained(str(tmp_path / "out")), batch)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # the backbone is a standard Hugging Face model directory
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "backbone")
    assert type(hf).__name__ == "Qwen3ForCausalLM"


def test_token_rows_delta_is_merged_on_export(tiny_net, demo_dir, batch, tmp_path):
    stage = AlignStage(tiny_net, train_token_rows=True)
    ckpt = trained(stage, demo_dir, tmp_path, "align")
    before = logits(stage_from_checkpoint(ckpt).model, batch)  # peft delta applied on the fly
    exported = QinYuModel.from_pretrained(save_exported(stage_from_checkpoint(ckpt).model, tmp_path / "out"))
    assert not isinstance(exported.backbone, PeftModel)
    after = logits(exported, batch)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_persona_adapter_loads_with_plain_peft_and_merges(tiny_net, demo_dir, batch, tmp_path):
    torch.manual_seed(0)
    base_dir = save_exported(QinYuModel(tiny_net), tmp_path / "base")
    stage = PersonaStage(tiny_net, init_from=str(base_dir), lora_r=4, lora_dropout=0.0, train_heads=True)
    ckpt = trained(stage, demo_dir, tmp_path, "persona")

    main(["export", ckpt, str(tmp_path / "adapter"), "--adapter_only", "true"])
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "qinyu_parts.safetensors").is_file()  # the heads it trained
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_dir / "backbone"), tmp_path / "adapter"
    ).eval()
    ids = batch["input_ids"][:, :64]
    with torch.no_grad():
        expected = stage_from_checkpoint(ckpt).model.backbone(input_ids=ids).logits
        assert torch.equal(plain(input_ids=ids).logits, expected)
        with plain.disable_adapter():  # the adapter is what makes the difference
            assert not torch.allclose(plain(input_ids=ids).logits, expected)

    lora = logits(stage_from_checkpoint(ckpt).model, batch)
    main(["export", ckpt, str(tmp_path / "merged")])
    merged = logits(QinYuModel.from_pretrained(str(tmp_path / "merged")), batch)
    for a, b in zip(lora, merged, strict=True):  # merging W + BA reorders float sums: equal to rounding
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_exported_dir_without_config_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="qinyu_config.json"):
        QinYuModel.from_pretrained(tmp_path)
