"""On a GPU: qinyu_varlen runs torch's varlen kernel, and a pack equals each sample alone (bf16).

Run with ``python -m pytest -m gpu tests/gpu``; skipped where there is no CUDA device.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from qinyu_lit.model import attention
from qinyu_lit.model.attention import VARLEN
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.tiny import tiny_config

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(attention.varlen_attn is None, reason="needs torch >= 2.10 (torch.nn.attention.varlen)"),
]


def _batch(samples: list[torch.Tensor], width: int) -> dict:
    ids, pos, t = torch.zeros(1, width, dtype=torch.long), torch.zeros(1, width, dtype=torch.long), 0
    for s in [*samples, torch.zeros(width - sum(map(len, samples)), dtype=torch.long)]:
        ids[0, t : t + len(s)], pos[0, t : t + len(s)] = s, torch.arange(len(s))
        t += len(s)
    batch = {"input_ids": ids, "position_ids": pos, "codes": torch.full((1, width, 8), -1)}
    return {k: v.cuda() for k, v in batch.items()}


@pytest.mark.parametrize("weights", ["bfloat16", None])  # bf16 weights; fp32 weights under bf16 autocast
def test_packed_logits_equal_each_sample_alone(demo_dir, weights, monkeypatch):
    torch.manual_seed(0)
    config = tiny_config(demo_dir / "tokenizer", hidden_size=256, num_layers=2, audio_encoder=False)
    model = QinYuModel(dataclasses.replace(config, attn_implementation=VARLEN, dtype=weights)).cuda().eval()

    def no_reference(*args, **kwargs):
        raise AssertionError("the per-sample reference ran instead of torch's varlen kernel")

    monkeypatch.setattr(attention, "segment_sdpa", no_reference)
    gen = torch.Generator().manual_seed(1)
    samples = [torch.randint(10, 200, (n,), generator=gen) for n in (37, 120, 64, 9)]
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        packed = model.head0_logits(model.hidden_states(_batch(samples, 256)))[0].float()
        model.backbone.config._attn_implementation = "sdpa"
        alone = [model.head0_logits(model.hidden_states(_batch([s], len(s))))[0].float() for s in samples]
    t = 0
    for s, ref in zip(samples, alone, strict=True):
        torch.testing.assert_close(packed[t : t + len(s)], ref, atol=5e-2, rtol=5e-2)
        t += len(s)


def test_packed_backward_runs_on_the_kernel(demo_dir):
    torch.manual_seed(0)
    config = tiny_config(demo_dir / "tokenizer", hidden_size=256, num_layers=2, audio_encoder=False)
    model = QinYuModel(dataclasses.replace(config, attn_implementation=VARLEN)).cuda()
    gen = torch.Generator().manual_seed(2)
    samples = [torch.randint(10, 200, (n,), generator=gen) for n in (50, 70)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model.hidden_states(_batch(samples, 128))[0, :120].float().pow(2).mean().backward()
    packed = model.backbone.get_decoder().layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()
    model.backbone.config._attn_implementation = "sdpa"
    with torch.autocast("cuda", dtype=torch.bfloat16):
        # the same loss: the mean over the 120 real positions, as a sum of per-sample shares
        sum(model.hidden_states(_batch([s], len(s)))[0].float().pow(2).sum() / 120 for s in samples).backward()
    alone = model.backbone.get_decoder().layers[0].self_attn.q_proj.weight.grad
    assert torch.isfinite(packed).all()
    torch.testing.assert_close(packed, alone, atol=2e-2, rtol=5e-2)
