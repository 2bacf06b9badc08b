"""benchmarks/gpu_throughput.py: its FLOP count and MFU arithmetic, checked on CPU with its own toy models.

The figures it prints on a GPU are only as good as the FLOPs it divides by: here the benchmark's
``step_flops`` for each case's model and packed batch is compared with ``FlopCounterMode`` on one
forward + backward, and its MFU with FLOPs / time / peak.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from qinyu_lit.data.tokenizer import train_demo_tokenizer

PATH = Path(__file__).parents[1] / "benchmarks" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_demo_tokenizer(["the quick brown fox jumps over the lazy dog"] * 50, tmp_path_factory.mktemp("t") / "tok", 768)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("case", ["sft_1.7b", "persona_8b"])
def test_flops_and_mfu_arithmetic(bench, tokenizer, case):
    torch.manual_seed(0)
    model = bench.build(case, tokenizer, tiny=True, device=torch.device("cpu"), checkpointing=False)
    model.backbone.set_attn_implementation("eager")  # attention as plain matmuls: FlopCounterMode sees it
    batch, lengths = bench.packed_batch(model, 128, torch.Generator().manual_seed(0), "cpu")
    assert len(lengths) == 1 and batch["pack"]["num_audio"] > 0  # toy pack: one sample of 128, half speech
    with FlopCounterMode(display=False) as counter:
        model.loss(batch).loss.backward()
    counted = counter.get_total_flops()
    # eager computes the full attention square; the count holds its causal half (tests/model/test_flops.py)
    attention = sum(v for k, v in counter.get_flop_counts()["Global"].items() if "bmm" in str(k))
    assert bench.step_flops(model, batch) == pytest.approx(counted - attention / 2, rel=0.05)

    args = argparse.Namespace(pack=128, steps=1, warmup=0, peak=1e12)
    r = bench.measure(model, "sdpa", args, torch.device("cpu"))
    flops = bench.step_flops(model, bench.packed_batch(model, 128, torch.Generator().manual_seed(0), "cpu")[0])
    assert r["mfu"] == pytest.approx(flops / r["s_per_step"] / 1e12, rel=1e-6)
    assert r["tflops"] == pytest.approx(flops / r["s_per_step"] / 1e12, rel=1e-6)
    assert r["tokens_per_s"] == pytest.approx(128 / r["s_per_step"])
