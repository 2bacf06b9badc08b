"""benchmarks/gpu_throughput.py runs end to end in its CPU smoke mode and says so without a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).parents[1] / "benchmarks" / "gpu_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.usefixtures("one_thread")
def test_tiny_mode_measures_every_attention_implementation(bench, capsys):
    assert bench.main(["--tiny", "--cases", "persona_8b"]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines() if line.startswith("| persona_8b")]
    assert [r[1] for r in rows] == ["qinyu_varlen", "sdpa"]
    assert all(float(r[3].replace(",", "")) > 0 and r[5] == "n/a" for r in rows)  # tokens/s; no MFU without a peak


def test_without_a_gpu_it_exits_cleanly_with_a_message(bench, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 0
    assert "no CUDA device here, nothing measured" in capsys.readouterr().out
