"""``qinyu-lit dpo-ref``: the reference model's reply log-probabilities, stored with the pairs.

With them DPO needs no reference model in memory (``DPOStage(reference="precomputed")``), so full
fine-tuning of a model whose second copy would not fit still runs. Each output row is the input row
plus ``ref_logp: [chosen, rejected]`` (summed, or per-position means with ``length_normalise``: use
the same setting in the stage).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..data.errors import QinYuError
from ..data.files import atomic_write_text
from ..data.layout import TokenLayout
from ..data.pairs import collate_pairs, read_pairs
from ..data.schema import CodecInfo
from ..model.reply_logprob import reply_logprobs
from .merge import load_any


@torch.no_grad()
def reference_logps(model, pairs: list[tuple], layout: TokenLayout, batch_size: int, normalise: bool) -> list[list[float]]:
    """[[chosen, rejected]] per pair, in order."""
    model.eval()
    out = []
    for start in range(0, len(pairs), batch_size):
        chunk = [(layout.build(c), layout.build(r)) for _, c, r, _ in pairs[start : start + batch_size]]
        logp = reply_logprobs(model, collate_pairs(chunk, layout.ids.pad, layout.num_codebooks), normalise)
        n = len(chunk)
        out += [[float(logp[i]), float(logp[n + i])] for i in range(n)]
    return out


def dpo_ref_cmd(*, model: str, pairs: str, out: str, length_normalise: bool = False, batch_size: int = 8,
                pattern: list[int] = [1, 8, 4, 8]) -> None:  # noqa: B006 - shown in --help
    """Add the reference model's log-probabilities to a JSONL of preference pairs.

    Args:
        model: the reference (the DPO run's starting point): an export directory or a ``.ckpt``.
        pairs: the pairs (JSONL, format in qinyu_lit/prep/demo_pairs.py).
        out: the JSONL to write (the input rows plus ``ref_logp``); then ``data.init_args.train`` = out
            and ``model.init_args.reference: precomputed``.
        length_normalise: per-position means instead of sums (must match the stage's ``length_normalise``).
        batch_size: pairs per forward pass.
        pattern: the interleave pattern (the data's ``pattern``).
    """
    if not Path(pairs).is_file():
        raise QinYuError(f"--pairs {pairs}: no such file")
    net = load_any(model)
    c = net.config
    layout = TokenLayout(net.tokenizer, list(pattern), c.num_codebooks, c.codebook_size)
    rows, _ = read_pairs(pairs, CodecInfo("pairs", c.num_codebooks, c.codebook_size, 0.0, 0))
    refs = reference_logps(net, rows, layout, batch_size, length_normalise)
    by_key = {sample.key.rsplit("/", 1)[0]: ref for (_, sample, _, _), ref in zip(rows, refs, strict=True)}
    lines = []
    for line_no, line in enumerate(Path(pairs).read_text().splitlines(), 1):
        if line.strip():
            row = json.loads(line)
            if row.get("key", f"line {line_no}") in by_key:  # pairs with identical replies were dropped (and warned about)
                lines.append(json.dumps({**row, "ref_logp": by_key[row.get("key", f"line {line_no}")]}) + "\n")
    atomic_write_text(out, "".join(lines))
    print(f"wrote {len(lines)} pairs with reference log-probabilities to {out}")
