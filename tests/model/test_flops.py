"""Dense bf16 peaks by device name (the MFU denominator) and the per-group FLOP count against torch's own."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from qinyu_lit.data.batch import collate
from qinyu_lit.data.features import FbankLFR
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.tokenizer import load_tokenizer
from qinyu_lit.model.flops import dense_bf16_peak, flop_shape, forward_flops, training_flops
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.prep.demo import demo_samples
from qinyu_lit.stages import AlignStage, PersonaStage, SFTStage


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.4e12),  # SXM
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989.4e12),  # Lightning's table lists the sparse 2 PFLOP/s for H200: not used
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA L40S", 362e12),
        ("Tesla T4", None),
    ],
)
def test_dense_peaks_by_device_name(name, peak):
    assert dense_bf16_peak(name) == peak


def _pack(demo_dir):
    layout = TokenLayout(load_tokenizer(str(demo_dir / "tokenizer")), codebook_size=64, front_end=FbankLFR())
    picks = [s for task in ("conversation", "asr", "tts", "sqa") for s in demo_samples(task, 2, 5, 16, 8, 64)]
    return collate([[layout.build(s) for s in picks]], layout.ids.pad, 8)


@pytest.mark.parametrize("stage_cls", [SFTStage, AlignStage, PersonaStage])
def test_the_count_agrees_with_torch_flop_counter(stage_cls, tiny_net, demo_dir):
    """One training step (forward + backward) of each freezing policy: all trainable (SFT), LLM frozen
    (align: 4 per frozen weight), LoRA on a frozen base (persona: 4N base + 6N adapters), against
    ``FlopCounterMode``. Attention is compared apart: on CPU sdpa is not counted by FlopCounterMode."""
    torch.manual_seed(0)
    stage = stage_cls(tiny_net, val_generate=0)
    stage.configure_model()
    model, batch = stage.model.train(), _pack(demo_dir)
    assert len(batch["lengths"][0]) == 8 and batch["pack"]["clip_frames"]  # a pack with user speech
    with FlopCounterMode(display=False) as counter:
        model(batch).loss.backward()
    counts = training_flops(flop_shape(model), batch)
    formula = sum(counts.values()) - counts["attention"]
    assert formula == pytest.approx(counter.get_total_flops(), rel=0.05)
    assert counts["attention"] > 0 and counts["heads"] > 0


def test_attention_is_the_causal_half_of_what_eager_computes(tiny_net, demo_dir):
    """One sample, eager attention (plain matmuls, counted): the full square is twice the causal count."""
    model = QinYuModel(dataclasses.replace(tiny_net, attn_implementation="eager", audio_encoder=None)).train()
    layout = TokenLayout(model.tokenizer, codebook_size=64)
    batch = collate([[layout.build(next(iter(demo_samples("tts", 1, 5, 16, 8, 64))))]], layout.ids.pad, 8)
    with FlopCounterMode(display=False) as counter:
        model(batch).loss.backward()
    bmm = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "bmm" in str(k))
    assert bmm == pytest.approx(2 * training_flops(flop_shape(model), batch)["attention"], rel=0.02)


def test_a_forward_pass_alone_agrees_with_torch_flop_counter(tiny_net, demo_dir):
    """DPO's reference model runs one forward per step (``forward_flops``): the same comparison, no backward."""
    torch.manual_seed(0)
    model, batch = QinYuModel(tiny_net).eval(), _pack(demo_dir)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    shape = flop_shape(model)
    attention = training_flops(shape, batch)["attention"] / 3  # forward: 2 of the 6 L d s^2
    assert forward_flops(shape, batch) - attention == pytest.approx(counter.get_total_flops(), rel=0.05)
