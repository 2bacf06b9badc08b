"""benchmarks/gpu_check.py on CPU: its plan, its recipe overrides (parsed by the real CLI) and its verdicts.

The check itself needs a GPU; what can go wrong without one is checked here: the small-shapes override
of the paper SFT recipe must parse against ``recipes/sft.yaml`` (FSDP, clipping, attention ``auto`` kept),
and the MFU verdict must read the benchmark's table right.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from qinyu_lit.cli import main

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_dry_run_writes_the_plan_and_the_recipe_override_parses(check, tmp_path, capsys):
    assert check.main(["--dry_run", "--work", str(tmp_path / "w"), "--report", str(tmp_path / "r.md")]) == 0
    report = (tmp_path / "r.md").read_text()
    assert report.count("| not run |") == 6 and "--ckpt_path last" in report and "gpu_throughput.py" in report
    fit = next(s for s in check.plan(tmp_path / "w", 0.35) if s.name.startswith("paper SFT")).command
    assert fit[:3] == [sys.executable, "-m", "qinyu_lit.cli"]
    with pytest.raises(SystemExit) as done:
        main([*fit[3:], "--print_config"])  # the real CLI, in this process: every key checked, nothing built
    assert done.value.code in (0, None)
    config = capsys.readouterr().out
    for kept in ("lightning.pytorch.strategies.FSDPStrategy", "gradient_clip_val: 1.0", "precision: bf16-mixed",
                 "attn_implementation: auto"):  # fmt: skip
        assert kept in config, kept
    assert "hidden_size: 256" in config and "max_steps: 4" in config and "init_from: null" in config


def test_mfu_verdict_reads_the_benchmark_table(check, tmp_path):
    step = check.plan(tmp_path, 0.35)[1]
    table = "| sft_1.7b | qinyu_varlen | 1.0 | 9,000 | 400.0 | 40.4% | 60.0 |\n"
    table += "| sft_1.7b (no ckpt) | qinyu_varlen | 1.0 | 9,000 | 300.0 | 30.0% | 70.0 |\n"
    step.output = table + "| persona_8b | qinyu_varlen | 1.0 | 9,000 | 300.0 | 34.9% | 50.0 |\n"
    assert not check.judge(step, tmp_path, 0.35)  # persona below target
    assert step.figures[-1] == "best MFU: sft_1.7b 40.4%, persona_8b 34.9%"
    step.output = step.output.replace("34.9%", "36.0%")
    assert check.judge(step, tmp_path, 0.35)
    step.output = table  # a case missing (e.g. out of memory): fail
    assert not check.judge(step, tmp_path, 0.35)
