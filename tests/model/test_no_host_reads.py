"""A training step's forward, loss and backward read nothing back from the device.

One pack of several demo samples (user speech through the frozen FunAsrNano encoder, speakers,
interleaved speech targets) runs forward + Eq. 3 loss + backward under ``HostReads``
(tests/_host_reads.py). What the step needs to know about the pack comes from ``collate``
(``batch["pack"]``, host data), so no op that would stall a GPU may appear.

Negative control, recorded with this recorder on the code before the collate metadata (commit cba3808):
the same forward + loss + backward made 20 reads - 8 ``int(n)`` (one per clip) in the encoder glue,
5 ``any()`` / ``int(sum)`` and a boolean-mask index in ``embed_inputs``, 3 boolean-mask indexings in the
loss (and 1 more in their backward), 2 in transformers' masks (the encoder's padding-mask skip test and
the packed-sequence detection). The test below also shows the recorder catching the reads of a batch
without its ``pack``.
"""

from __future__ import annotations

import pytest
import torch

from qinyu_lit.data.batch import collate
from qinyu_lit.data.features import FbankLFR
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.prep.demo import demo_samples

from .._host_reads import HostReads


@pytest.fixture(scope="module")
def pack_batch(demo_dir):
    from qinyu_lit.data.tokenizer import load_tokenizer

    layout = TokenLayout(load_tokenizer(str(demo_dir / "tokenizer")), codebook_size=64, front_end=FbankLFR())
    picks = [s for task in ("conversation", "asr", "tts", "sqa") for s in demo_samples(task, 2, 5, 16, 8, 64)]
    seqs = [layout.build(s) for s in picks]
    half = len(seqs) // 2
    return collate([seqs[:half], seqs[half:]], layout.ids.pad, 8, pad_to=sum(map(len, seqs)) + 3)


def test_a_training_step_makes_no_device_to_host_read(tiny_net, pack_batch):
    torch.manual_seed(0)
    model = QinYuModel(tiny_net).train()
    batch = pack_batch
    assert len(batch["pack"]["clip_frames"]) >= 4 and batch["pack"]["num_audio"] > 0  # speech in and out
    assert max(len(row) for row in batch["lengths"]) >= 3  # several samples in a pack
    with HostReads() as reads:
        out = model(batch)
        out.loss.backward()
    assert reads.ops == []
    assert torch.isfinite(out.loss) and model.adapter[1].weight.grad.abs().sum() > 0

    # the recorder does catch reads: the same batch without the collate's facts derives them itself
    model.zero_grad()
    hand_made = {k: v for k, v in batch.items() if k != "pack"}
    with HostReads() as reads:
        model(hand_made).loss.backward()
    assert len(reads.ops) >= 3, reads.ops
