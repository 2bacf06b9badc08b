"""``index.json``: what ``qinyu-lit data build`` records about a shard set, read back at training start."""

from __future__ import annotations

import json
from pathlib import Path

INDEX_FORMAT = "qinyu-index/v1"


def check_index_codec(folder: str | Path, num_codebooks: int, codebook_size: int) -> None:
    """Fail fast, before any worker starts, when a built shard set's codec (``index.json``)
    does not match the model's; a folder without an index is left to the per-sample check."""
    path = Path(folder) / "index.json"
    if not path.is_file():
        return
    codec = json.loads(path.read_text()).get("codec") or {}
    got = (codec.get("num_codebooks"), codec.get("codebook_size"))
    if codec and got != (num_codebooks, codebook_size):
        raise ValueError(
            f"{folder}: shards hold {got[0]} x {got[1]} codes ({codec.get('name')}, {codec.get('frame_rate')} Hz) but "
            f"the model expects {num_codebooks} x {codebook_size}: set --data.init_args.num_codebooks {got[0]} "
            f"--data.init_args.codebook_size {got[1]}, or rebuild the shards with the model's codec"
        )
