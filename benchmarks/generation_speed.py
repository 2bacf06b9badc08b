"""Decoding speed of ``generate`` (KV cache) in positions per second, and what the cache saves.

    python benchmarks/generation_speed.py                       # tiny random model, CPU
    python benchmarks/generation_speed.py --ckpt exports/sft --device cuda

Positions are text tokens plus audio frames; at 12.5 frames/s of speech, real time needs about
12.5 + (text tokens per second) positions per second. Each reply is forced to its full length
(``<|im_end|>`` masked) so runs compare like with like. The "no cache" line recomputes the whole
sequence each step, which is what decoding without ``DynamicCache`` would cost.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from qinyu_lit.inference import load_model, make_sample, prompt_batch
from qinyu_lit.model.generate import generate


def tiny_model(threads: int):
    from qinyu_lit.model.qinyu import QinYuConfig, QinYuModel
    from qinyu_lit.prep.demo import make_demo_corpus

    torch.set_num_threads(threads)
    corpus = make_demo_corpus(tempfile.mkdtemp(), samples_per_task=1, val_samples_per_task=1)
    torch.manual_seed(0)
    backbone = dict(
        model_type="qwen3",
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        vocab_size=448,
        tie_word_embeddings=False,
    )  # fmt: skip  (the tiny recipe's backbone)
    return QinYuModel(
        QinYuConfig(backbone=backbone, tokenizer=str(corpus / "tokenizer"), codebook_size=64, speaker_dim=16)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", help="checkpoint or exported directory (default: tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--positions", type=int, default=200, help="generated positions per reply")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the tiny model")
    args = parser.parse_args()
    model = (load_model(args.ckpt) if args.ckpt else tiny_model(args.threads)).to(args.device).eval()
    prompt = prompt_batch(model, make_sample(model, "hello world, tell me a story"))
    im_end = model.ids.im_end

    def no_end(logits):
        logits = logits.clone()
        logits[im_end] = float("-inf")
        return logits.argmax(-1)

    generate(model, prompt, 8, pick_text=no_end)  # warm-up
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    out = generate(model, prompt, args.positions, pick_text=no_end)
    sync()
    cached = time.perf_counter() - start
    n = len(out.positions)
    print(
        f"device {args.device}, prompt {prompt['input_ids'].shape[1]} positions, reply {n} positions "
        f"({out.positions.count('a')} audio, {out.positions.count('t')} text)"
    )
    print(f"KV cache:  {n / cached:8.1f} positions/s  ({1000 * cached / n:.2f} ms/position)")

    # the same reply without a cache: one full forward over prompt + reply so far per position
    ids, codes = prompt["input_ids"], prompt["codes"]
    steps = min(n, 50)  # quadratic: a sample of steps is enough for the rate
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(steps):
            batch = dict(
                prompt,
                input_ids=ids,
                codes=codes,
                position_ids=torch.arange(ids.shape[1], device=ids.device)[None],
            )
            hidden = model.hidden_states(batch)[:, -1]
            model.head0_logits(hidden), model.code_logits(hidden)
            ids = torch.cat([ids, ids[:, -1:]], 1)
            codes = torch.cat([codes, codes[:, -1:]], 1)
    sync()
    full = time.perf_counter() - start
    print(f"no cache:  {steps / full:8.1f} positions/s  over the first {steps} positions")


if __name__ == "__main__":
    main()
