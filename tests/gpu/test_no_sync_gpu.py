"""On a GPU: a training forward + loss + backward of a pack makes no synchronising CUDA call.

``torch.cuda.set_sync_debug_mode("error")`` makes every synchronising operation (a device value read on
the host, a blocking copy) raise. The CPU twin of this test is tests/model/test_no_host_reads.py.
Run with ``python -m pytest -m gpu tests/gpu``; skipped where there is no CUDA device.
"""

from __future__ import annotations

import pytest
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

from qinyu_lit.data.batch import collate
from qinyu_lit.data.features import FbankLFR
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.tokenizer import load_tokenizer
from qinyu_lit.model.attention import VARLEN
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.prep.demo import demo_samples

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("attn", [VARLEN, "sdpa"])
def test_training_step_makes_no_cuda_sync(tiny_net, demo_dir, attn):
    import dataclasses

    layout = TokenLayout(load_tokenizer(str(demo_dir / "tokenizer")), codebook_size=64, front_end=FbankLFR())
    picks = [s for task in ("conversation", "asr", "tts", "sqa") for s in demo_samples(task, 2, 5, 16, 8, 64)]
    seqs = [layout.build(s) for s in picks]
    batch = collate([seqs[:4], seqs[4:]], layout.ids.pad, 8, pad_to=sum(map(len, seqs)))
    model = QinYuModel(dataclasses.replace(tiny_net, attn_implementation=attn, loss_chunk_size=16)).cuda().train()
    batch = move_data_to_device(batch, torch.device("cuda"))
    torch.cuda.synchronize()
    for step in range(2):  # the first step may initialise kernels; both must be sync-free
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(batch)
            out.loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert torch.isfinite(out.loss).item(), step
