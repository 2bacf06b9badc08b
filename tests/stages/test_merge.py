"""Core-Cocktail merge (``qinyu-lit merge``): the ends reproduce each model bit for bit, what the base
lacks comes from the tuned model, the result is an export (plain transformers loads its backbone)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from qinyu_lit.cli import main
from qinyu_lit.data.errors import QinYuError
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.stages import SFTStage
from qinyu_lit.stages.merge import merge_cmd


def _model(net, seed: int) -> QinYuModel:
    torch.manual_seed(seed)
    return QinYuModel(net)


@pytest.fixture(scope="module")
def pair(demo_dir, tmp_path_factory):
    """M0 as an export directory, M1 as a Lightning checkpoint (different random weights, same shapes)."""
    from tests.conftest import make_tiny_net

    net = make_tiny_net(demo_dir)
    root = tmp_path_factory.mktemp("merge")
    base = _model(net, 0)
    base.save_pretrained(root / "base")
    stage = SFTStage(net)
    stage.model = _model(net, 1)
    hp = {"net": dataclasses.asdict(net), "_class_path": "qinyu_lit.stages.SFTStage"}
    torch.save({"hyper_parameters": hp, "state_dict": stage.state_dict()}, root / "tuned.ckpt")
    return net, root, base.state_dict(), stage.model.state_dict()


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_alpha_ends_give_each_model_bit_for_bit(pair, alpha):
    net, root, base, tuned = pair
    merge_cmd(base=str(root / "base"), tuned=str(root / "tuned.ckpt"), out=str(root / f"m{alpha}"), alpha=alpha)
    merged = QinYuModel.from_pretrained(root / f"m{alpha}").state_dict()
    assert merged.keys() == tuned.keys()
    want = base if alpha == 0.0 else tuned
    assert all(torch.equal(merged[k], want[k]) and merged[k].dtype == want[k].dtype for k in want)
    differ = sum(not torch.equal(base[k], tuned[k]) for k in base)
    assert differ > 20  # the two models really differ, so the checks above could fail


def test_half_is_the_mean_and_the_cli_writes_an_export(pair):
    net, root, base, tuned = pair
    main(["merge", "--base", str(root / "base"), "--tuned", str(root / "tuned.ckpt"), "--out", str(root / "half")])
    merged = QinYuModel.from_pretrained(root / "half").state_dict()
    key = "backbone.model.layers.0.self_attn.q_proj.weight"
    assert torch.allclose(merged[key], (base[key] + tuned[key]) / 2, atol=1e-6)
    # an export: its backbone is a plain Hugging Face model directory
    hf = AutoModelForCausalLM.from_pretrained(root / "half" / "backbone")
    assert torch.equal(hf.state_dict()["model.layers.0.self_attn.q_proj.weight"], merged[key])


def test_parameters_the_base_lacks_come_from_the_tuned_model(pair):
    """Base = the original LLM alone (plain transformers, fewer vocabulary rows): the QinYu parts and the
    new token rows are the tuned model's, the shared rows blended."""
    net, root, base, tuned = pair
    config = AutoConfig.for_model(**{**net.backbone, "vocab_size": 700})
    torch.manual_seed(2)
    llm = AutoModelForCausalLM.from_config(config)
    llm.save_pretrained(root / "llm")
    merge_cmd(base=str(root / "llm"), tuned=str(root / "tuned.ckpt"), out=str(root / "from_llm"), alpha=0.5)
    merged = QinYuModel.from_pretrained(root / "from_llm").state_dict()
    own = [k for k in tuned if not k.startswith("backbone.")]
    assert own and all(torch.equal(merged[k], tuned[k]) for k in own)
    emb, llm_emb = "backbone.model.embed_tokens.weight", llm.state_dict()["model.embed_tokens.weight"]
    assert torch.equal(merged[emb][700:], tuned[emb][700:])
    assert torch.allclose(merged[emb][:700], (llm_emb + tuned[emb][:700]) / 2, atol=1e-6)


def test_bad_alpha_and_other_shapes_are_one_line_errors(pair, tmp_path):
    net, root, _, _ = pair
    with pytest.raises(QinYuError, match=r"--alpha 1.5: must lie in \[0, 1\]"):
        merge_cmd(base=str(root / "base"), tuned=str(root / "tuned.ckpt"), out=str(tmp_path / "x"), alpha=1.5)
    wider = dataclasses.replace(net, backbone={**net.backbone, "intermediate_size": 96})
    _model(wider, 3).save_pretrained(tmp_path / "wider")
    with pytest.raises(QinYuError, match=r"^backbone\.model\.layers\.0\.mlp\.gate_proj\.weight: shape \(96, 64\) in the base but \(128, 64\) in the tuned model"):
        merge_cmd(base=str(tmp_path / "wider"), tuned=str(root / "tuned.ckpt"), out=str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
