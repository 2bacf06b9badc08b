"""Each stage's freezing policy, checked after real optimizer steps: frozen = bit-identical, trainable = changed."""

from __future__ import annotations

import pytest
import torch

from qinyu_lit.stages import AlignStage, PersonaStage, PretrainStage, SFTStage
from qinyu_lit.stages.align import qinyu_token_ids

from .helpers import fit_steps

CASES = {
    "align": (AlignStage, {}, {"adapter"}),
    "align+token_rows": (AlignStage, {"train_token_rows": True}, {"adapter", "backbone"}),
    "pretrain": (
        PretrainStage,
        {},
        {"adapter", "speaker_proj", "backbone", "codebook_embed", "code0_head", "code_heads"},
    ),
    "sft": (
        SFTStage,
        {},
        {"adapter", "speaker_proj", "backbone", "codebook_embed", "code0_head", "code_heads"},
    ),
    "persona": (PersonaStage, {"lora_r": 4, "target_modules": ["q_proj", "v_proj"]}, {"backbone"}),
    "persona+heads": (
        PersonaStage,
        {"lora_r": 4, "train_heads": True, "train_audio_embeddings": True, "train_token_rows": True},
        {"backbone", "code0_head", "code_heads", "codebook_embed"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_frozen_parameters_stay_bit_identical_and_trainable_ones_move(case, tiny_net, demo_dir):
    cls, kwargs, trained_modules = CASES[case]
    stage = cls(tiny_net, **kwargs)
    stage.configure_model()
    before = {n: p.detach().clone() for n, p in stage.model.named_parameters()}
    trainable = {n for n, p in stage.model.named_parameters() if p.requires_grad}
    assert trainable and {n.split(".")[0] for n in trainable} == trained_modules
    assert not any(n.startswith("audio_encoder.") for n in trainable)  # frozen in every stage

    fit_steps(stage, demo_dir, steps=3)

    after = dict(stage.model.named_parameters())
    assert set(after) == set(before)
    for name, old in before.items():
        same = torch.equal(old, after[name].detach())
        assert same != (name in trainable), f"{case}: {name} {'unchanged' if same else 'changed'}"


def test_token_rows_train_through_a_delta_not_a_slice(tiny_net, demo_dir):
    """Only the special-token rows of the *effective* embedding move; the base matrix is untouched."""
    stage = AlignStage(tiny_net, train_token_rows=True)
    stage.configure_model()
    embed = stage.model.backbone.get_input_embeddings()
    all_ids = torch.arange(embed.base_layer.num_embeddings)
    before = embed(all_ids).detach().clone()
    fit_steps(stage, demo_dir, steps=3)
    moved = (embed(all_ids).detach() != before).any(-1).nonzero().flatten().tolist()
    assert moved == qinyu_token_ids(stage.model)
