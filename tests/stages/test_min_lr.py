"""``min_lr`` on the shared warmup + cosine schedule: the run ends at it (Core-Cocktail: 1e-5, then 1e-6)."""

from __future__ import annotations

import math

import pytest
import torch

from qinyu_lit.stages import SFTStage
from qinyu_lit.stages.schedule import cosine_with_warmup
from tests.stages.helpers import fit_steps


def test_warmup_then_cosine_down_to_min_lr():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = cosine_with_warmup(optimizer, warmup=2, total=10, min_lr=1e-5)
    lrs = []
    for _ in range(11):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.0, 5e-5, 1e-4])
    cosine = [1e-5 + 0.5 * (1e-4 - 1e-5) * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 11)]
    assert lrs[2:] == pytest.approx(cosine, rel=1e-9)
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-12)  # the schedule's end is min_lr, not 0


def test_min_lr_above_the_lr_is_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-5)
    with pytest.raises(ValueError, match="min_lr 0.0001: must lie in"):
        cosine_with_warmup(optimizer, 0, 10, min_lr=1e-4)


def test_lr_0_is_a_schedule_at_0():
    """LR 0 (a run that must not move its weights, e.g. to save a recipe's start) has no min_lr ratio to take."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    scheduler = cosine_with_warmup(optimizer, warmup=0, total=4)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == 0.0


@pytest.mark.usefixtures("one_thread")
def test_a_stage_run_ends_at_its_min_lr(demo_dir, tiny_net):
    stage = SFTStage(tiny_net, warmup_ratio=0.0, min_lr=1e-3, val_generate=0)
    trainer = fit_steps(stage, demo_dir, steps=3, lr=1e-2)
    assert trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0] == pytest.approx(1e-3, rel=1e-9)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3, rel=1e-9)


@pytest.mark.parametrize("name, lr, min_lr", [("cocktail_stage1", 1e-4, 1e-5), ("cocktail_stage2", 1e-5, 1e-6)])
def test_cocktail_recipes_end_at_the_reports_final_lrs(name, lr, min_lr):
    from pathlib import Path

    import yaml

    recipes = Path(__file__).resolve().parents[2] / "recipes"
    model = yaml.safe_load((recipes / f"{name}.yaml").read_text())["model"]["init_args"]
    assert (model["optimizer"]["init_args"]["lr"], model["min_lr"]) == (lr, min_lr)
    tiny = yaml.safe_load((recipes / "tiny" / f"{name}.yaml").read_text())["model"]["init_args"]
    assert tiny["min_lr"] == pytest.approx(tiny["optimizer"]["init_args"]["lr"] / 10)
