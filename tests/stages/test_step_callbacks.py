"""The stage's cross-cutting callbacks on a real tiny run: host reads per step, the NaN guard's token
count, the release's token normalisation, the encoder's dropout option.

``test_an_unlogged_training_step_reads_the_device_once`` runs whole Lightning training steps (data
counters, guard, gradient norm, throughput monitor, clipping, AdamW) under ``HostReads``
(tests/_host_reads.py). Recorded with the same test on the code before this change (commit cba3808):
38 reads in that one optimizer step of 2 micro-batches - per micro-batch the encoder glue's ``int(n)``
per clip, ``any()`` / counts / boolean masks in ``embed_inputs`` and the loss, 2 in transformers' masks,
the guard's ``isfinite`` check, a boolean ``index_put`` in backward; plus the guard's decision.
Now: exactly one, the guard's decision, once per optimizer step.
"""

from __future__ import annotations

import dataclasses

import lightning as L
import pytest
import torch

from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.stages import SFTStage
from qinyu_lit.stages.throughput import real_tokens

from .._host_reads import HostReads
from .helpers import fit_steps


class RecordReads(L.Callback):
    """HostReads around the micro-batches of optimizer step ``step``, minus the loader's collate of the
    next batch (host tensors) and AdamW's internals (its step counts are host tensors)."""

    def __init__(self, step: int):
        self.step, self.reads, self.mode = step, [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.mode is None:
            self.mode = HostReads(ignore=("qinyu_lit/data/", "torch/optim/")).__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.mode is not None and trainer.global_step > self.step:
            self.mode.__exit__(None, None, None)
            self.reads, self.mode = self.mode.ops, None


@pytest.mark.usefixtures("one_thread")
def test_an_unlogged_training_step_reads_the_device_once(demo_dir, tiny_net):
    record = RecordReads(step=1)  # log_every_n_steps=5: step 1 is not logged
    trainer = fit_steps(SFTStage(tiny_net, val_generate=0), demo_dir, steps=2, gradient_clip_val=1.0,
                        accumulate_grad_batches=2, log_every_n_steps=5, callbacks=[record])  # fmt: skip
    assert trainer.global_step == 2
    assert [op for op, _ in record.reads] == ["aten._local_scalar_dense.default"], record.reads
    assert record.reads[0][1].startswith("guard.py")  # NonFiniteGuard: one decision per optimizer step


class Poisoned(SFTStage):
    """The loss of batch 1 is NaN; records ``train/tokens_per_optimizer_step`` and each batch's real tokens."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.logged, self.tokens = [], []

    def training_step(self, batch, batch_idx):
        self.tokens.append(real_tokens(batch))
        out = self.model(batch)
        if batch_idx == 1:
            out.loss = out.loss * float("nan")
        self.model.forward = lambda b: out  # the stage's own step, on the poisoned output
        try:
            return super().training_step(batch, batch_idx)
        finally:
            del self.model.forward

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.logged.append(float(self.trainer.callback_metrics["train/tokens_per_optimizer_step"]))


@pytest.mark.usefixtures("one_thread")
def test_a_skipped_step_does_not_inflate_the_next_steps_token_count(demo_dir, tiny_net):
    stage = Poisoned(tiny_net, val_generate=0)
    fit_steps(stage, demo_dir, steps=4)
    assert stage._data_counts["nonfinite_steps"] == 1
    assert stage.logged == stage.tokens  # one batch per step, the skipped one's tokens counted once


class Grads(SFTStage):
    def on_before_optimizer_step(self, optimizer):  # runs after every callback's hook: the scaled gradients
        self.grads = [p.grad.clone() for p in self.model.parameters() if p.grad is not None]
        self.batches = getattr(self, "batches", [])

    def on_train_batch_start(self, batch, batch_idx):
        self.batches = getattr(self, "batches", []) + [batch]


@pytest.mark.usefixtures("one_thread")
def test_token_normalisation_divides_summed_losses_by_all_positions_of_the_step(demo_dir, tiny_net):
    stage = Grads(tiny_net, val_generate=0, loss_normalization="tokens")
    torch.manual_seed(0)
    fit_steps(stage, demo_dir, steps=1, accumulate_grad_batches=2)
    torch.manual_seed(0)
    reference = QinYuModel(tiny_net).train()  # the same initial weights (same seed, same build)
    params = [p for p in reference.parameters() if p.requires_grad]
    outs = [reference.loss(b) for b in stage.batches]
    total = sum(o.num_targets for o in outs)
    assert outs[0].num_targets != outs[1].num_targets  # a per-micro-batch mean would weigh them differently
    grads = torch.autograd.grad(sum(o.loss_sum for o in outs) / total, params, allow_unused=True)
    mine = iter(stage.grads)
    for g in grads:
        if g is not None:
            torch.testing.assert_close(next(mine), g, atol=1e-6, rtol=1e-4)


def test_encoder_dropout_follows_the_option(tiny_net, demo_dir):
    for on in (False, True):
        torch.manual_seed(0)
        model = QinYuModel(dataclasses.replace(tiny_net, encoder_dropout_in_training=on)).train()
        feats, lens = torch.randn(2, 9, 560), torch.tensor([9, 6])
        first, second = model.encode_audio(feats, lens, [9, 6]), model.encode_audio(feats, lens, [9, 6])
        assert model.audio_encoder.training is on
        assert torch.equal(first, second) is not on  # dropout 0.1 in the encoder's config: outputs differ
        model.eval()
        assert not model.audio_encoder.training
