"""Packed samples do not see each other: each sample's logits and loss are the same packed and alone.

Uses the real ``QinYuModel`` (a 2-layer random Qwen3 + tiny FunAsrNano encoder) on demo samples
with user speech, speakers and interleaved audio codes. transformers derives the block-diagonal
mask from ``position_ids`` restarting at 0 (``collate``); the negative control shows the same
pack with running position ids does leak, so the test can fail.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from qinyu_lit.data.batch import collate
from qinyu_lit.data.features import FbankLFR
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.tokenizer import load_tokenizer
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.prep.demo import demo_samples


@pytest.fixture(scope="module")
def sequences(demo_dir):
    layout = TokenLayout(load_tokenizer(str(demo_dir / "tokenizer")), codebook_size=64, front_end=FbankLFR())
    picks = [next(iter(demo_samples(task, 1, 5, 16, 8, 64))) for task in ("conversation", "tts", "sqa")]
    return layout, [layout.build(s) for s in picks]


def _only(batch: dict, start: int, end: int) -> dict:
    """The same batch, supervising only positions [start, end) of row 0."""
    out = dict(batch)
    out.pop("pack")  # the collate's host-side facts describe the old mask: derived again from the tensors
    mask = torch.zeros_like(batch["target_mask"])
    mask[0, start:end] = batch["target_mask"][0, start:end]
    out["target_mask"] = mask
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager", "qinyu_varlen"])  # qinyu_varlen: its CPU reference kernel
def test_packed_equals_alone(tiny_net, sequences, attn):
    layout, seqs = sequences
    torch.manual_seed(0)
    model = QinYuModel(dataclasses.replace(tiny_net, attn_implementation=attn)).eval()
    pad, nc = layout.ids.pad, layout.num_codebooks
    packed = collate([seqs], pad, nc, pad_to=sum(map(len, seqs)) + 5)  # a padding tail as in a real pack
    with torch.no_grad():
        logits_packed = model.head0_logits(model.hidden_states(packed))[0]
        start = 0
        for seq in seqs:
            alone = collate([[seq]], pad, nc)
            logits_alone = model.head0_logits(model.hidden_states(alone))[0]
            end = start + len(seq)
            torch.testing.assert_close(logits_packed[start:end], logits_alone, atol=1e-5, rtol=1e-5)
            loss_packed = model.loss(_only(packed, start, end)).loss
            torch.testing.assert_close(loss_packed, model.loss(alone).loss, atol=1e-5, rtol=1e-5)
            start = end

        # negative control: running position ids make the later samples attend to the earlier ones
        leaky = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1])[None])
        leaky.pop("pack")  # its sample boundaries come from the (now running) position ids
        logits_leaky = model.head0_logits(model.hidden_states(leaky))[0]
        second = slice(len(seqs[0]), len(seqs[0]) + len(seqs[1]))
        assert (logits_leaky[second] - logits_packed[second]).abs().max() > 1e-2
