"""Gradient clipping by norm through ``QinYuStage.configure_gradient_clipping``: clipped, and the
logged ``train/grad_norm`` is the total norm before clipping; FSDP takes its own sharded path."""

from __future__ import annotations

import os

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy, SingleDeviceStrategy

from qinyu_lit.stages import SFTStage
from qinyu_lit.stages.gradients import clip_grad_norm

from .helpers import fit_steps


class RecordNorms(L.Callback):
    """The gradient norm before clipping (on_before_optimizer_step runs first) and after it."""

    def __init__(self):
        self.before, self.after, self.logged = [], [], []

    def _norm(self, pl_module):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.before.append(self._norm(pl_module))

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        if any(p.grad is not None for p in pl_module.parameters()):
            self.after.append(self._norm(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.logged.append(float(trainer.callback_metrics["train/grad_norm"]))


@pytest.mark.usefixtures("one_thread")
def test_clipping_clips_and_logs_the_norm_before_clipping(tiny_net, demo_dir):
    record = RecordNorms()
    fit_steps(SFTStage(tiny_net), demo_dir, steps=3, gradient_clip_val=0.05, log_every_n_steps=1, callbacks=[record])
    assert len(record.before) == 3 and min(record.before) > 0.05  # the random model's gradients exceed the limit
    assert record.logged == pytest.approx(record.before, rel=1e-4)  # = torch's clip_grad_norm_ total norm
    # after the step the gradients (still there until the next zero_grad) have the clipped norm
    assert record.after[:2] == pytest.approx([0.05, 0.05], rel=1e-3)


@pytest.mark.usefixtures("one_thread")
def test_without_clipping_the_norm_is_still_logged_and_gradients_untouched(tiny_net, demo_dir):
    record = RecordNorms()
    fit_steps(SFTStage(tiny_net), demo_dir, steps=2, log_every_n_steps=1, callbacks=[record])
    assert record.logged == pytest.approx(record.before, rel=1e-4)
    assert record.after[:1] == pytest.approx(record.before[:1], rel=1e-5)


def test_fsdp_strategy_clips_through_the_wrapped_root(monkeypatch):
    """The branch is chosen by strategy type: a real FSDPStrategy whose root is a real FSDP module
    (one CPU process over gloo, which FSDP runs unsharded; Lightning's FSDPStrategy itself insists
    on a GPU, so the sharded runs are in tests/gpu/). Unwrapped, the FSDP branch refuses rather
    than clip one shard by its own norm."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    net(x).sum().backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in net.parameters()])
    strategy = FSDPStrategy()
    strategy.model = net
    with pytest.raises(TypeError, match="FullyShardedDataParallel"):
        clip_grad_norm(strategy, torch.optim.AdamW(net.parameters()), 1.0)

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(29000 + os.getpid() % 1000))
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        net.zero_grad()
        strategy.model = FullyShardedDataParallel(net, device_id=torch.device("cpu"))
        strategy.model(x).sum().backward()
        norm = clip_grad_norm(strategy, torch.optim.AdamW(strategy.model.parameters()), 1e-3)
        torch.testing.assert_close(norm, expected)
        after = torch.nn.utils.get_total_norm([p.grad for p in strategy.model.parameters()])
        assert after.item() == pytest.approx(1e-3, rel=1e-3)
    finally:
        dist.destroy_process_group()
    norm = clip_grad_norm(SingleDeviceStrategy(device=torch.device("cpu")), torch.optim.AdamW(net.parameters()), 1e9)
    assert norm.item() == pytest.approx(torch.nn.utils.get_total_norm([p.grad for p in net.parameters()]).item())
