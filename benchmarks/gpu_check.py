"""One device check on one GPU (< 8 minutes): the GPU tests, the throughput benchmark, the paper SFT recipe.

Steps, each timed and marked pass/fail in one markdown report (``--report``, default gpu_check.md):

1. ``pytest -m gpu tests/gpu``: varlen attention against per-sample sdpa, the GPU recipe tests.
2. ``benchmarks/gpu_throughput.py`` for 1.7B full SFT (with and without gradient checkpointing) and 8B
   persona LoRA at pack 10K on ``qinyu_varlen``: pass = best MFU of each case >= ``--target_mfu`` (35%),
   MFU by ``model/flops.py``'s per-group count.
3. The paper SFT recipe as shipped (``recipes/sft.yaml``: FSDP, clipping at 1.0, bf16-mixed, attention
   ``auto``) on small shapes (``small_sft.yaml`` written next to the report: a 4-layer Qwen3, the demo
   corpus and tokenizer, packs of 2,048, one GPU) for 4 steps with checkpoints, then ``--ckpt_path last``
   to step 6, then ``qinyu-lit export`` of the result.

    python benchmarks/gpu_check.py                  # on the GPU machine, from the repository root
    python benchmarks/gpu_check.py --dry_run        # CPU: write the plan (commands, no figures)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMALL_SFT = """# gpu_check: recipes/sft.yaml on small shapes (one GPU, the demo corpus); every other field as shipped
trainer:
  devices: 1
  max_steps: {steps}
  val_check_interval: 2
  limit_val_batches: 1
  log_every_n_steps: 1
  logger:
    class_path: lightning.pytorch.loggers.TensorBoardLogger
    init_args: {{save_dir: {work}/runs, name: sft}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {work}/checkpoints, save_last: true, every_n_train_steps: 2, save_top_k: -1}}
model:
  init_args:
    init_from: null
    val_generate: 1
    net:
      backbone: {{model_type: qwen3, hidden_size: 256, intermediate_size: 768, num_hidden_layers: 4,
                 num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64, vocab_size: 1024}}
      tokenizer: {work}/demo/tokenizer
      audio_encoder: {{hidden_size: 64, intermediate_size: 128, num_attention_heads: 2, num_hidden_layers: 2,
                      num_timestamp_prediction_layers: 1}}
      codebook_size: 64
      speaker_dim: 16
data:
  init_args:
    train: {work}/demo/train
    val: {work}/demo/val
    tokenizer: {work}/demo/tokenizer
    codebook_size: 64
    pack_length: 2048
    tokens_per_step: 4096
    num_workers: 2
"""


@dataclass
class Step:
    name: str
    command: list[str]
    check: str = "exit status 0"
    seconds: float | None = None
    ok: bool | None = None  # None: not run
    figures: list[str] = field(default_factory=list)
    output: str = ""


def plan(work: Path, target_mfu: float) -> list[Step]:
    py, cli = sys.executable, [sys.executable, "-m", "qinyu_lit.cli"]
    fit = [*cli, "fit", "--config", str(ROOT / "recipes/sft.yaml"), "--config", str(work / "small_sft.yaml")]
    ckpt = str(work / "checkpoints" / "last.ckpt")
    return [
        Step("GPU tests", [py, "-m", "pytest", "-q", "-m", "gpu", str(ROOT / "tests/gpu")]),
        Step("throughput (pack 10K, qinyu_varlen)",
             [py, str(ROOT / "benchmarks/gpu_throughput.py"), "--attn", "qinyu_varlen", "--steps", "3", "--warmup", "2"],
             check=f"best MFU of each case >= {target_mfu:.0%}"),  # fmt: skip
        Step("demo corpus", [*cli, "demo-data", "--out_dir", str(work / "demo"), "--samples_per_task", "8"]),
        Step("paper SFT recipe, 4 steps", [*fit, "--trainer.max_steps", "4"], check="exit 0 and last.ckpt at step 4"),
        Step("resume --ckpt_path last to step 6", [*fit, "--trainer.max_steps", "6", "--ckpt_path", "last"],
             check="exit 0 and 'Restored all states'"),  # fmt: skip
        Step("export", [*cli, "export", ckpt, str(work / "export")], check="exit 0 and qinyu_config.json written"),
    ]


def judge(step: Step, work: Path, target_mfu: float) -> bool:
    """Pass/fail of a finished step, and the figures it produced."""
    if step.name.startswith("throughput"):
        rows = [r for r in step.output.splitlines() if r.startswith("| ") and "%" in r]
        step.figures = rows
        best: dict[str, float] = {}
        for r in rows:
            cells = [c.strip() for c in r.strip("|").split("|")]
            case = cells[0].split(" ")[0]
            best[case] = max(best.get(case, 0.0), float(cells[5].rstrip("%")) / 100)
        step.figures.append("best MFU: " + ", ".join(f"{c} {m:.1%}" for c, m in best.items()))
        return len(best) == 2 and all(m >= target_mfu for m in best.values())
    if step.name.startswith("GPU tests"):
        step.figures = [line for line in step.output.splitlines() if re.search(r"\d+ (passed|failed|skipped)", line)]
    if "Restored all states" not in step.output and step.name.startswith("resume"):
        return False
    if step.name.startswith("export"):
        return (work / "export" / "qinyu_config.json").is_file()
    return True


def run(step: Step, work: Path, target_mfu: float, budget_s: float) -> None:
    start = time.perf_counter()
    try:
        done = subprocess.run(step.command, capture_output=True, text=True, cwd=work, timeout=budget_s)
        step.output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        step.output, code = f"timed out after {budget_s:.0f} s\n{e.stdout or ''}", -1
    step.seconds = time.perf_counter() - start
    step.ok = code == 0 and judge(step, work, target_mfu)


def report(steps: list[Step], device: str) -> str:
    """The markdown report: one row per step (pass/fail, seconds), then each step's figures."""
    mark = {True: "pass", False: "FAIL", None: "not run"}
    lines = [f"# gpu_check on {device}", "", "| step | result | seconds | check |", "|---|---|---:|---|"]
    for s in steps:
        secs = f"{s.seconds:.0f}" if s.seconds is not None else ""
        lines.append(f"| {s.name} | {mark[s.ok]} | {secs} | {s.check} |")
    for s in steps:
        lines += ["", f"## {s.name}", "", "```", " ".join(s.command), "```"]
        if s.figures:
            lines += ["", *s.figures]
        if s.ok is False:
            lines += ["", "last output:", "```", s.output[-3000:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", default="gpu_check_work", help="scratch directory (corpus, checkpoints, export)")
    parser.add_argument("--report", default="gpu_check.md")
    parser.add_argument("--target_mfu", type=float, default=0.35)
    parser.add_argument("--budget_s", type=float, default=450, help="the whole check's time limit")
    parser.add_argument("--dry_run", action="store_true", help="write the plan without running anything")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    (work / "small_sft.yaml").write_text(SMALL_SFT.format(steps=4, work=work))
    steps = plan(work, args.target_mfu)
    device = "(dry run)"
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here; --dry_run writes the plan only")
            return 2
        device = torch.cuda.get_device_name()
        deadline = time.perf_counter() + args.budget_s
        for step in steps:
            run(step, work, args.target_mfu, max(10.0, deadline - time.perf_counter()))
            print(f"[gpu_check] {step.name}: {'pass' if step.ok else 'FAIL'} ({step.seconds:.0f} s)", flush=True)
    Path(args.report).write_text(report(steps, device))
    print(f"[gpu_check] wrote {args.report}")
    return 0 if all(s.ok for s in steps) or args.dry_run else 1


if __name__ == "__main__":
    sys.exit(main())
