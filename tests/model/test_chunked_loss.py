"""The chunked loss equals the loss it replaced (values and gradients, fp32, 1e-5), and its peak memory is bounded.

``old_loss`` (tests/model/_old_loss.py) is the implementation before ``model/chunked_loss.py``, kept here only as the
reference: boolean-mask selection of the supervised positions and full ``[positions x vocab]`` fp32
logits. Checked for the qinyu layout (separate heads, Eq. 3 and the ``official`` loss) and the released
layout (shared ``lm_head``, converted by ``convert-official``), with chunks small enough that several
run under activation checkpointing.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from qinyu_lit.model.qinyu import QinYuModel

from ._old_loss import old_loss
from .test_no_host_reads import pack_batch  # noqa: F401 - a fixture
from .test_official import converted, official_sample, release  # noqa: F401 - fixtures


def assert_same_loss_and_gradients(model: QinYuModel, batch: dict) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    ref = old_loss(model, batch)
    ref_grads = torch.autograd.grad(ref["loss"], params, allow_unused=True)
    out = model.loss(batch)
    grads = torch.autograd.grad(out.loss, params, allow_unused=True)
    for key, value in ref.items():
        torch.testing.assert_close(getattr(out, key), value.detach(), atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        if b is None:
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss", ["eq3", "official"])
def test_qinyu_layout_same_loss_and_gradients(tiny_net, pack_batch, loss):  # noqa: F811
    torch.manual_seed(0)
    model = QinYuModel(dataclasses.replace(tiny_net, loss=loss, loss_chunk_size=16)).eval()
    assert pack_batch["pack"]["sup_index"].numel() > 3 * 16  # several checkpointed chunks
    assert_same_loss_and_gradients(model, pack_batch)


def test_release_layout_same_loss_and_gradients(release, converted):  # noqa: F811
    model = QinYuModel.from_pretrained(str(converted), dtype="float32").eval()
    model.config.loss_chunk_size = 5
    batch, _, _ = official_sample(release)
    assert model.shared is not None and model.config.loss == "official"
    assert int(batch["target_mask"].sum()) > 3 * 5
    assert_same_loss_and_gradients(model, batch)


def test_peak_memory_of_the_loss_is_a_quarter_of_the_old_one_or_less(demo_dir):
    """benchmarks/loss_memory.py at a small size: 600 supervised positions, an 8K vocabulary, chunks of 64."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "benchmarks" / "loss_memory.py"
    spec = importlib.util.spec_from_file_location("loss_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from qinyu_lit.model.tiny import tiny_config

    config = tiny_config(str(demo_dir / "tokenizer"), audio_encoder=False)
    config.backbone = {**config.backbone, "vocab_size": 8_000}
    config.loss_chunk_size = 64
    model = QinYuModel(config)
    pack = bench.synthetic_pack(1200, 0.5, 8, config.codebook_size, model.ids.frame)
    shape, index = pack["shape"], pack["sup_index"] + 1
    ids, codes, mask = torch.zeros(shape, dtype=torch.long), torch.full((*shape, 8), -1), torch.zeros(shape, dtype=torch.bool)
    ids.view(-1)[index], codes.view(-1, 8)[index], mask.view(-1)[index] = pack["next_ids"], pack["next_codes"], True
    batch = {"input_ids": ids, "codes": codes, "target_mask": mask}
    chunked = bench.measure(model, pack, batch, "chunked", 64)
    old = bench.measure(model, pack, batch, "old", 64)
    full_logits = pack["sup_index"].numel() * 8_000 * 4  # one [positions x vocab] fp32 tensor
    assert old > 2 * full_logits  # the old loss holds several of them (the measure can see it)
    assert chunked <= old / 4
