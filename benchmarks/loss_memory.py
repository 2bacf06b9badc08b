"""Peak memory of the loss (forward + backward from the decoder output) on one packed row, CPU.

The heads of a 152K-vocabulary model (Qwen3's 151,936 ids) at a small hidden size, on one pack of
``--pack`` tokens in samples of 500 (the first ``1 - --supervised`` share of each unsupervised, the rest
replies, alternately text and audio frames). Compared: the chunked loss (``model/chunked_loss.py``)
and the loss it replaced (``tests/model/_old_loss.py``), both from the same hidden states.

Peak = the most bytes of tensor storage alive at once, created inside the loss and its backward
(parameters and the input hidden states excluded), counted by a ``TorchDispatchMode`` over every op
(``PeakLiveBytes``); the process's peak RSS is printed too.

    python benchmarks/loss_memory.py                       # pack 10,000, 25% supervised, bf16 weights
    python benchmarks/loss_memory.py --supervised 0.1 --dtype float32
"""

from __future__ import annotations

import argparse
import importlib.util
import resource
import sys
import tempfile
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from qinyu_lit.data.batch import pack_metadata
from qinyu_lit.data.tokenizer import train_demo_tokenizer
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.tiny import tiny_config

QWEN3_VOCAB = 151936


class PeakLiveBytes(TorchDispatchMode):
    """Bytes of tensor storage created under the mode and still alive, and their peak."""

    def __init__(self):
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key, (ref, nbytes) in list(self.live.items()):
            if ref.expired():
                del self.live[key]
                self.now -= nbytes
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes():
                storage = t.untyped_storage()
                if storage.data_ptr() not in self.live:
                    self.live[storage.data_ptr()] = (StorageWeakRef(storage), storage.nbytes())
                    self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)
        return out


def synthetic_pack(width: int, supervised: float, num_codebooks: int, codebook_size: int, frame_id: int):
    """One row: samples of 500 tokens, the last ``supervised`` share of each a reply (text and audio alternating)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 200, (1, width), generator=g)
    codes = torch.full((1, width, num_codebooks), -1)
    mask = torch.zeros(1, width, dtype=torch.bool)
    segments = [min(500, width - s) for s in range(0, width, 500)]
    for s, n in zip(range(0, width, 500), segments, strict=True):
        first = s + n - int(n * supervised)
        mask[0, first : s + n] = True
        audio = torch.arange(first, s + n)[::2]
        codes[0, audio] = torch.randint(0, codebook_size, (len(audio), num_codebooks), generator=g)
        ids[0, audio] = frame_id
    return pack_metadata(ids, codes, mask, [segments], [])


def old_loss_fn():
    path = Path(__file__).parents[1] / "tests" / "model" / "_old_loss.py"
    spec = importlib.util.spec_from_file_location("_old_loss", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.old_loss


def measure(model: QinYuModel, pack: dict, batch: dict, which: str, hidden_size: int) -> int:
    dtype = model.backbone.get_output_embeddings().weight.dtype
    hidden = torch.randn(1, pack["shape"][1], hidden_size, dtype=dtype, requires_grad=True)
    with PeakLiveBytes() as mem:
        if which == "chunked":
            loss = model.loss_from_hidden(hidden, pack).loss
        else:
            loss = old_loss_fn()(model, batch, hidden=hidden)["loss"]
        loss.backward()
    return mem.peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pack", type=int, default=10_000)
    parser.add_argument("--supervised", type=float, default=0.25, help="share of each sample that is a reply")
    parser.add_argument("--vocab", type=int, default=QWEN3_VOCAB)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--which", nargs="+", default=["chunked", "old"], choices=["chunked", "old"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_demo_tokenizer(["the quick brown fox jumps over the lazy dog"] * 50, Path(tmp) / "tok", 768)
        config = tiny_config(str(tok), hidden_size=args.hidden, audio_encoder=False)
        config.backbone = {**config.backbone, "vocab_size": args.vocab}
        config.dtype = args.dtype
        model = QinYuModel(config)
    pack = synthetic_pack(args.pack, args.supervised, 8, config.codebook_size, model.ids.frame)
    ids = torch.zeros(pack["shape"], dtype=torch.long)
    ids.view(-1)[pack["sup_index"] + 1] = pack["next_ids"]
    codes = torch.full((*pack["shape"], 8), -1)
    codes.view(-1, 8)[pack["sup_index"] + 1] = pack["next_codes"]
    mask = torch.zeros(pack["shape"], dtype=torch.bool)
    mask.view(-1)[pack["sup_index"] + 1] = True
    batch = {"input_ids": ids, "codes": codes, "target_mask": mask}
    n = pack["sup_index"].numel()
    print(f"pack {args.pack}, {n} supervised positions, vocabulary {model.text_vocab:,}, hidden {args.hidden}, {args.dtype}, "
          f"chunk {config.loss_chunk_size}")  # fmt: skip
    print("| loss | peak tensor memory (MB) | peak RSS so far (MB) |\n|---|---:|---:|")
    peaks = {}
    for which in args.which:
        peaks[which] = measure(model, pack, batch, which, args.hidden)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"| {which} | {peaks[which] / 2**20:,.0f} | {rss:,.0f} |")
    if len(peaks) == 2:
        print(f"chunked / old = {peaks['chunked'] / peaks['old']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
