"""GPU training throughput: tokens/s, MFU and peak memory of QinYu steps at pack 10K.

Two cases in the real Qwen3 shapes with random weights (no download): ``sft_1.7b`` (Qwen3-1.7B
backbone, full fine-tuning, fp32 weights + bf16 autocast, fused AdamW) and ``persona_8b``
(Qwen3-8B backbone in bf16, LoRA r=16 on every projection, as recipes/persona_lora.yaml). Both
with gradient checkpointing and clipping at 1.0, on packs of 10,000 tokens holding samples of a
few hundred tokens (half text, half audio frames), for each attention implementation available:
``qinyu_varlen`` (torch's varlen kernel), ``sdpa`` (block-diagonal mask), ``flash_attention_2``
when flash-attn is installed. The audio encoder is left out (frozen, forward only, small).

MFU = the step's FLOPs by parameter group (``qinyu_lit/model/flops.py``: trainable weights 6 per token,
frozen ones 4, heads at the supervised positions, attention within samples; LoRA 4N base + 6N
adapters) / step time / the GPU's dense bf16 peak. The SFT case runs with and without gradient
checkpointing (``--checkpointing``); a run out of memory prints ``OOM`` in its row.

    python benchmarks/gpu_throughput.py [--cases sft_1.7b persona_8b] [--attn qinyu_varlen sdpa] [--steps 5]
    python benchmarks/gpu_throughput.py --tiny     # CPU smoke test of the same code with toy shapes
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

from qinyu_lit.data.batch import pack_metadata
from qinyu_lit.data.tokenizer import train_demo_tokenizer
from qinyu_lit.model.attention import VARLEN
from qinyu_lit.model.flops import dense_bf16_peak, flop_shape, training_flops
from qinyu_lit.model.qinyu import QinYuConfig, QinYuModel
from qinyu_lit.stages.base import apply_trainable
from qinyu_lit.tiny_configs import tiny_backbone

QWEN3 = {  # the public Qwen3 configs (config.json), random weights here
    "1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
               num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}  # fmt: skip
CASES = {"sft_1.7b": ("1.7b", False), "persona_8b": ("8b", True)}  # name -> (shape, LoRA on a bf16 base)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def backbone(shape: str, tiny: bool) -> dict:
    if tiny:
        return tiny_backbone(64, 2)
    return dict(model_type="qwen3", vocab_size=151936, max_position_embeddings=40960, rms_norm_eps=1e-6, **QWEN3[shape])


def build(case: str, tokenizer: Path, tiny: bool, device: torch.device, checkpointing: bool = True) -> QinYuModel:
    shape, lora = CASES[case]
    config = QinYuConfig(backbone=backbone(shape, tiny), tokenizer=str(tokenizer), codebook_size=1024, speaker_dim=192,
                         dtype="bfloat16" if lora else None, gradient_checkpointing=checkpointing)  # fmt: skip
    with device:  # random init on the GPU: seconds instead of minutes
        model = QinYuModel(config)
        if lora:
            from peft import LoraConfig, get_peft_model

            model.backbone = get_peft_model(model.backbone, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
            apply_trainable(model, ["backbone.*lora_A.*", "backbone.*lora_B.*"])
    return model.train()


def packed_batch(model: QinYuModel, pack: int, gen: torch.Generator, device) -> tuple[dict, list[int]]:
    """One row of samples of 150-750 tokens, each half text, half audio frames, all supervised."""
    lengths, left = [], pack
    while left > 0:
        n = min(int(torch.randint(150, 750, (1,), generator=gen)), left)
        lengths.append(n)
        left -= n
    text_ids = torch.arange(len(model.tokenizer.all_special_ids) + 8, len(model.tokenizer))
    ids = text_ids[torch.randint(len(text_ids), (1, pack), generator=gen)]
    codes = torch.randint(0, model.config.codebook_size, (1, pack, model.config.num_codebooks), generator=gen)
    pos, t = torch.zeros(1, pack, dtype=torch.long), 0
    for n in lengths:
        pos[0, t : t + n] = torch.arange(n)
        codes[0, t : t + n // 2] = -1  # the first half of each sample is text
        t += n
    mask = torch.ones(1, pack, dtype=torch.bool)
    mask[0, torch.tensor([0, *torch.tensor(lengths).cumsum(0)[:-1].tolist()])] = False  # a sample's first token
    batch = {"input_ids": ids, "codes": codes, "position_ids": pos, "target_mask": mask, "lengths": [lengths]}
    batch["pack"] = pack_metadata(ids, codes, mask, [lengths], [])  # as collate makes it, on the host
    return move(batch, device), lengths


def move(batch: dict, device) -> dict:
    out = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    out["pack"] = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch["pack"].items()}
    return out


def step_flops(model: QinYuModel, batch: dict) -> int:
    """The FLOPs MFU is computed from: ``model/flops.py``'s count, the same the stages log."""
    return sum(training_flops(flop_shape(model), batch).values())


def measure(model: QinYuModel, attn: str, args, device: torch.device) -> dict:
    model.backbone.set_attn_implementation(attn)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(0)
    batches = [packed_batch(model, args.pack, gen, device) for _ in range(args.warmup + args.steps)]
    flops = sum(step_flops(model, batch) for batch, _ in batches[args.warmup :])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i, (batch, _) in enumerate(batches):
        if i == args.warmup:
            sync(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model.loss(batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    seconds = (time.perf_counter() - start) / args.steps
    peak = args.peak or (dense_bf16_peak(torch.cuda.get_device_name(device)) if device.type == "cuda" else None)
    return dict(
        attn=attn, s_per_step=seconds, tokens_per_s=args.pack / seconds, tflops=flops / args.steps / seconds / 1e12,
        mfu=flops / args.steps / seconds / peak if peak else None,
        peak_gib=torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
    )  # fmt: skip


def optimizer_free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def available_attention(tiny: bool) -> list[str]:
    names = [VARLEN, "sdpa"]
    if not tiny and importlib.util.find_spec("flash_attn") is not None:
        names.append("flash_attention_2")
    return names


def row(case: str, r: dict) -> str:
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
    mem = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "n/a"
    return f"| {case} | {r['attn']} | {r['s_per_step']:.3f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.1f} | {mfu} | {mem} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--attn", nargs="+", default=None, help="default: every implementation available")
    parser.add_argument("--pack", type=int, default=10_000)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: toy shapes, pack 128, 1 step")
    parser.add_argument("--checkpointing", choices=["on", "off", "both"], default="both",
                        help="gradient checkpointing for sft_1.7b (persona_8b always on)")
    parser.add_argument("--peak", type=float, default=None, help="dense peak FLOP/s to compute MFU against "
                        "(default: the GPU's from model/flops.py)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.tiny:
        args.pack, args.steps, args.warmup = 128, 1, 0
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        print("gpu_throughput: no CUDA device here, nothing measured. Run it on a GPU, or --tiny for a CPU smoke test.")
        return 0
    else:
        device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}, "
          f"pack {args.pack}, {args.steps} timed steps after {args.warmup}")  # fmt: skip
    print("| case | attention | s/step | tokens/s | TFLOP/s | MFU | peak GiB |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_demo_tokenizer(["the quick brown fox jumps over the lazy dog"] * 50, Path(tmp) / "tok", 768)
        for case in args.cases:
            modes = {"on": [True], "off": [False], "both": [True, False]}[args.checkpointing] if case == "sft_1.7b" else [True]
            for checkpointing in modes:
                name = f"{case}{'' if checkpointing else ' (no ckpt)'}"
                model = build(case, tokenizer, args.tiny, device, checkpointing)
                for attn in args.attn or available_attention(args.tiny):
                    try:
                        print(row(name, measure(model, attn, args, device)), flush=True)
                    except torch.OutOfMemoryError:
                        print(f"| {name} | {attn} | OOM | | | | |", flush=True)
                    optimizer_free(device)
                del model
                optimizer_free(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())

