"""Step overhead: the Lightning fit loop (QinYuStage, with its logging) vs a plain PyTorch loop.

Same model (a small random Qwen3 + tiny FunAsrNano encoder), same pre-collated demo batches,
same AdamW + warmup-cosine + grad clip 1.0, CPU, one thread each. Times steps after a warm-up.

    python benchmarks/step_overhead.py [--steps 60] [--hidden 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader
from transformers import get_cosine_schedule_with_warmup

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.model.qinyu import QinYuConfig, QinYuModel
from qinyu_lit.model.tiny import tiny_config
from qinyu_lit.prep.demo import make_demo_corpus
from qinyu_lit.stages import SFTStage

WARMUP = 10


class Clock(L.Callback):
    def __init__(self):
        self.t: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.t.append(time.perf_counter())


def net(demo: Path, hidden: int, layers: int) -> QinYuConfig:
    return tiny_config(demo / "tokenizer", hidden_size=hidden, num_layers=layers)


def lightning_time(cfg, batches, steps) -> float:
    torch.manual_seed(0)
    stage = SFTStage(cfg, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3, betas=(0.9, 0.95)))
    clock = Clock()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        callbacks=[clock],
    )
    trainer.fit(stage, DataLoader(batches, batch_size=None))
    return (clock.t[-1] - clock.t[WARMUP]) / (len(clock.t) - 1 - WARMUP)


def plain_time(cfg, batches, steps) -> float:
    torch.manual_seed(0)
    model = QinYuModel(cfg).train()
    params = [p for n, p in model.named_parameters() if not n.startswith("audio_encoder")]
    for n, p in model.named_parameters():
        p.requires_grad_(not n.startswith("audio_encoder"))
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95))
    sched = get_cosine_schedule_with_warmup(opt, int(0.03 * steps), steps)
    marks = []
    for batch in batches[:steps]:
        marks.append(time.perf_counter())
        loss = model.loss(batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(loss)  # the loop reads its loss as Lightning's does (progress/logging)
    return (marks[-1] - marks[WARMUP]) / (len(marks) - 1 - WARMUP)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument(
        "--repeats", type=int, default=2, help="alternate the two loops this many times, keep the best"
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    demo = make_demo_corpus(Path(tempfile.mkdtemp()) / "demo", samples_per_task=12, val_samples_per_task=1)
    dm = QinYuDataModule(
        train=str(demo / "train"),
        tokenizer=str(demo / "tokenizer"),
        codebook_size=64,
        batch_size=args.batch,
        shuffle_buffer=0,
    )
    one_epoch = list(dm.train_dataloader())
    batches = (one_epoch * (args.steps // len(one_epoch) + 1))[: args.steps]
    for b in batches:
        b.pop("stream_state", None)
    cfg = net(demo, args.hidden, args.layers)
    light, plain = [], []
    for _ in range(args.repeats):
        plain.append(plain_time(cfg, batches, args.steps))
        light.append(lightning_time(cfg, batches, args.steps))
    p, lt = min(plain), min(light)
    tokens = sum(int(b["num_tokens"]) for b in batches) / len(batches)
    print(
        f"model hidden {args.hidden} x {args.layers} layers, {tokens:.0f} tokens per step, {args.steps} steps ({WARMUP} warm-up)"
    )
    print(f"plain PyTorch loop: {p * 1000:.1f} ms/step")
    print(f"Lightning fit loop: {lt * 1000:.1f} ms/step  ({(lt / p - 1):+.1%} vs plain)")


if __name__ == "__main__":
    main()
