"""``qinyu-lit dpo-ref``: the reference model's reply log-probabilities, computed once and stored.

With them DPO needs no reference model in memory (``model.init_args.reference: <this file>``), so full
fine-tuning of a model whose second copy would not fit still runs. The file maps each pair's key to
``[chosen, rejected]`` (sums over the supervised positions, or per-position means with
``length_normalise``: the stage checks that its own setting matches).
"""

from __future__ import annotations

import json

import torch

from ..data.errors import QinYuError
from ..data.files import atomic_write_text
from ..data.mixture import Catalog, parse_sources
from ..data.stream import ShardStream
from ..inference import layout_for
from ..model.reply_logprob import reply_logprobs
from ..stages.merge import load_any


@torch.no_grad()
def reference_logps(model, stream: ShardStream, normalise: bool) -> dict[str, list[float]]:
    """key -> [chosen, rejected] for every pair the stream reads (in order, each once)."""
    model.eval()
    out = {}
    for batch in stream:
        pairs = batch.get("pairs")
        if pairs is None:
            raise QinYuError(f"{batch['sources'][0][0]}: sample {batch['keys'][0][0]!r} has no rejected reply: "
                             "dpo-ref reads preference shards (schema v2)")
        logp = reply_logprobs(model, batch, normalise)
        for key, c, r in zip(pairs["keys"], pairs["chosen"].tolist(), pairs["rejected"].tolist(), strict=True):
            out[key] = [float(logp[c]), float(logp[r])]
    return out


def dpo_ref_cmd(*, model: str, data: str | list[str], out: str, length_normalise: bool = False, batch_size: int = 8,
                pattern: list[int] = [1, 8, 4, 8]) -> None:  # noqa: B006 - shown in --help
    """Compute a reference model's log-probabilities of every pair's replies, for DPO without a reference model.

    Args:
        model: the reference (the DPO run's starting point): an export directory or a ``.ckpt``.
        data: preference shard sets (folders, globs; schema v2), e.g. the run's train and val sets.
        out: the JSON file to write; then ``model.init_args.reference: OUT`` in the DPO recipe.
        length_normalise: per-position means instead of sums (must match the stage's ``length_normalise``).
        batch_size: pairs per forward pass.
        pattern: the interleave pattern (the data's ``pattern``).
    """
    net = load_any(model)
    stream = ShardStream(Catalog.build(parse_sources(data), strict=True), layout_for(net, tuple(pattern)),
                         batch_size=batch_size, strict=True)  # fmt: skip
    logps = reference_logps(net, stream, length_normalise)
    atomic_write_text(out, json.dumps({"model": str(model), "length_normalise": length_normalise, "logps": logps}))
    print(f"wrote the reference log-probabilities of {len(logps)} pairs to {out}")
