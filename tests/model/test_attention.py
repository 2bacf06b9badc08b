"""qinyu_varlen: registered with transformers, sample boundaries from position ids, packed == alone.

torch's varlen kernel has no CPU implementation; on CPU the same attention function runs its
reference kernel (causal sdpa per sample), so these tests check the plumbing and the layout
(flattening, GQA, boundaries once per forward, the sdpa fallback with a KV cache). The kernel
itself is checked against each sample alone in tests/gpu/.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from transformers import DynamicCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from qinyu_lit.model import attention, qinyu
from qinyu_lit.model.attention import VARLEN, cu_seqlens_from_position_ids, resolve_attn_implementation
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.tiny import tiny_config


@pytest.fixture
def text_model(demo_dir):
    torch.manual_seed(0)
    config = dataclasses.replace(tiny_config(demo_dir / "tokenizer", audio_encoder=False), attn_implementation=VARLEN)
    return QinYuModel(config).eval()


def test_registered_with_transformers_and_auto_resolves(monkeypatch):
    assert ALL_ATTENTION_FUNCTIONS[VARLEN] is attention.qinyu_varlen_attention
    assert VARLEN in ALL_MASK_ATTENTION_FUNCTIONS.valid_keys()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_attn_implementation("auto") == "sdpa"  # the CPU path
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_attn_implementation("auto") == (VARLEN if attention.varlen_attn is not None else "sdpa")
    assert resolve_attn_implementation("flash_attention_2") == "flash_attention_2"  # asked for: kept


def test_cu_seqlens_from_position_ids_hand_example():
    position_ids = torch.tensor([
        [0, 1, 2, 0, 1, 0, 1, 2, 3, 0],  # samples of 3, 2, 4, then a 1-token padding tail
        [0, 1, 2, 3, 4, 5, 0, 1, 0, 1],  # 6 and 2, then a 2-token padding tail (restarts at 0)
    ])  # fmt: skip
    cu, longest = cu_seqlens_from_position_ids(position_ids)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 5, 9, 10, 16, 18, 20] and longest == 6
    # a row that continues the previous row's count still starts a new segment (rows never join)
    cu, longest = cu_seqlens_from_position_ids(torch.tensor([[0, 1, 2], [3, 4, 5]]))
    assert cu.tolist() == [0, 3, 6] and longest == 3
    cu, longest = cu_seqlens_from_position_ids(torch.tensor([0, 1, 0, 1, 2]))  # one unbatched row
    assert cu.tolist() == [0, 2, 5] and longest == 3


def _batch(rows: list[list[torch.Tensor]], width: int) -> dict:
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    pos = torch.zeros(len(rows), width, dtype=torch.long)
    for b, row in enumerate(rows):
        t = 0
        for sample in [*row, torch.zeros(width - sum(map(len, row)), dtype=torch.long)]:
            ids[b, t : t + len(sample)], pos[b, t : t + len(sample)] = sample, torch.arange(len(sample))
            t += len(sample)
    return {"input_ids": ids, "position_ids": pos, "codes": torch.full((*ids.shape, 8), -1)}


def test_packed_rows_equal_each_sample_alone_and_boundaries_are_computed_once(text_model, monkeypatch):
    model = text_model
    reserved = {model.ids.speaker, model.ids.user_speaker, model.ids.audio}
    gen = torch.Generator().manual_seed(1)
    samples = [torch.randint(10, 200, (n,), generator=gen) for n in (5, 7, 4, 9)]
    assert not reserved & {int(i) for s in samples for i in s}
    calls = []
    real = attention.cu_seqlens_from_position_ids  # a hand-made batch: QinYuModel derives its pack facts once
    monkeypatch.setattr(qinyu, "cu_seqlens_from_position_ids", lambda p: calls.append(1) or real(p))
    with torch.no_grad():
        packed = model.hidden_states(_batch([samples[:3], samples[3:]], width=20))
        assert len(calls) == 1  # once per forward, not once per layer (2 layers here)
        model.backbone.config._attn_implementation = "sdpa"  # alone: transformers' own sdpa path
        alone = [model.hidden_states(_batch([[s]], width=len(s)))[0] for s in samples]
    starts = [(0, 0), (0, 5), (0, 12), (1, 0)]
    for (row, t), s, ref in zip(starts, samples, alone, strict=True):
        torch.testing.assert_close(packed[row, t : t + len(s)], ref, atol=1e-5, rtol=1e-5)


def test_generation_with_a_kv_cache_falls_back_to_sdpa(text_model):
    """Decoding passes no boundaries: prefill + one cached step equal one full forward under sdpa."""
    decoder = text_model.backbone.get_decoder()
    embeds = torch.randn(1, 6, decoder.config.hidden_size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cache = DynamicCache(config=decoder.config)
        decoder(inputs_embeds=embeds[:, :5], position_ids=torch.arange(5)[None], past_key_values=cache, use_cache=True)
        step = decoder(inputs_embeds=embeds[:, 5:], position_ids=torch.tensor([[5]]), past_key_values=cache, use_cache=True)
        decoder.config._attn_implementation = "sdpa"
        full = decoder(inputs_embeds=embeds, position_ids=torch.arange(6)[None], use_cache=False)
    torch.testing.assert_close(step.last_hidden_state[0, 0], full.last_hidden_state[0, 5], atol=1e-5, rtol=1e-5)


def test_packed_backward_matches_alone(text_model):
    """Gradients flow through the packed path the same as through each sample alone."""
    model = text_model
    gen = torch.Generator().manual_seed(3)
    samples = [torch.randint(10, 200, (n,), generator=gen) for n in (6, 3)]
    model.hidden_states(_batch([samples], width=10))[0, :9].sum().backward()
    packed = model.backbone.get_decoder().layers[0].self_attn.q_proj.weight.grad.clone()
    model.zero_grad()
    model.backbone.config._attn_implementation = "sdpa"
    for s in samples:
        model.hidden_states(_batch([[s]], width=len(s))).sum().backward()
    alone = model.backbone.get_decoder().layers[0].self_attn.q_proj.weight.grad
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-4)
