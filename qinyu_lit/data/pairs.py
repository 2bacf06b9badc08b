"""Preference pairs for DPO: a JSONL of pairs (``prep/demo_pairs.py`` documents the format) -> batches.

Each pair is laid out twice with the SFT layout (``TokenLayout.build``): the chosen and the rejected
conversation, whose supervised positions are the last assistant turn (text interleaved with speech).
A batch of N pairs holds 2N unpacked rows - the N chosen, then the N rejected - so attention stays
within each sequence as in SFT and the two replies of a pair share the batch.

Checks: a pair whose prompts differ (any turn but the last, the system prompt, the agent voice) is
refused naming the file, the key and the field; a pair whose replies are identical teaches nothing and
is dropped with a warning, and counted (``PairsDataModule.identical``).
"""

from __future__ import annotations

import inspect
import json
import warnings
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from .batch import collate
from .datamodule import QinYuDataModule
from .errors import QinYuError
from .schema import CodecInfo, Sample, Turn


def _turns(rows: list[dict]) -> list[Turn]:
    return [Turn(t["role"], t.get("text", ""), codes=None if t.get("codes") is None else np.asarray(t["codes"], np.int64))
            for t in rows]


def _sample(row: dict, key: str, turns: list[dict], side: str, codec: CodecInfo, path: str) -> Sample:
    voice = row.get("agent_speaker")
    return Sample(f"{key}/{side}", row["task"], _turns(turns), codec, system=row.get("system", ""),
                  agent_speaker=None if voice is None else np.asarray(voice, np.float32), shard=path)


def read_pairs(path: str | Path, codec: CodecInfo) -> tuple[list[tuple], int]:
    """JSONL pairs -> [(task, chosen sample, rejected sample, reference log-probs or None)], and the
    number of identical pairs dropped."""
    pairs, identical = [], 0
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        key = row.get("key", f"line {line_no}")
        for field in ("task", "chosen", "rejected"):
            if field not in row:
                raise QinYuError(f"{path}: pair {key!r}, field {field!r}: missing")
        chosen, rejected = row["chosen"], row["rejected"]
        if chosen[:-1] != rejected[:-1]:
            turn = next((i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1], strict=False)) if a != b), len(chosen) - 1)
            raise QinYuError(f"{path}: pair {key!r}, field 'rejected[{turn}]': the prompts differ (only the last turn may)")
        if chosen[-1] == rejected[-1]:
            identical += 1
            warnings.warn(f"{path}: pair {key!r}: chosen and rejected replies are identical; pair skipped", stacklevel=2)
            continue
        chosen_sample, rejected_sample = (_sample(row, key, turns, side, codec, str(path))
                                          for turns, side in ((chosen, "chosen"), (rejected, "rejected")))
        ref = row.get("ref_logp")  # [chosen, rejected] from `qinyu-lit dpo-ref`, if precomputed
        pairs.append((row["task"], chosen_sample, rejected_sample, None if ref is None else tuple(ref)))
    return pairs, identical


def collate_pairs(pairs: list[tuple], pad_id: int, num_codebooks: int) -> dict:
    """N pairs (chosen, rejected[, reference log-probs]) -> one batch of 2N rows (chosen rows first);
    ``pair_tasks`` names each pair's kind, ``ref_logps`` [2N] holds precomputed reference log-probs."""
    batch = collate([[p[0]] for p in pairs] + [[p[1]] for p in pairs], pad_id, num_codebooks)
    batch["pair_tasks"] = [p[0].task for p in pairs]
    refs = [p[2] if len(p) > 2 else None for p in pairs]
    if all(r is not None for r in refs):
        batch["ref_logps"] = torch.tensor([r[0] for r in refs] + [r[1] for r in refs], dtype=torch.float32)
    return batch


class PairsDataModule(QinYuDataModule):
    """Preference pairs from JSONL files for ``DPOStage`` (a ``QinYuDataModule``, so recipes link the
    tokenizer and codec sizes to the model as for every stage; the pairs are held in memory).

    Args:
        train: the training pairs (JSONL).
        val: held-out pairs (JSONL); ``None``: no validation.
        tokenizer: the tokenizer directory or name (the model's).
        pattern: interleave blocks, as for SFT.
        num_codebooks: codebooks per audio frame.
        codebook_size: codes per codebook.
        audio_front_end: set from the model's encoder (recipes link it); the JSONL pairs hold no user speech yet.
        num_mel_bins: set from the model's encoder (recipes link it).
        token_layout: ``qinyu`` (the official layout is not supported for pairs).
        batch_size: pairs per batch (each batch holds 2 x batch_size sequences).
        seed: the shuffle of the training pairs (``seed_everything`` seeds it).
    """

    def __init__(self, train: str, val: str | None = None, tokenizer: str = "data/demo/tokenizer",
                 pattern: list[int] = [1, 8, 4, 8], num_codebooks: int = 8, codebook_size: int = 1024,  # noqa: B006
                 audio_front_end: Literal["fbank_lfr", "whisper", "sense_voice"] = "fbank_lfr",
                 num_mel_bins: int = 80, token_layout: Literal["qinyu"] = "qinyu", batch_size: int = 8, seed: int = 0):  # fmt: skip
        super().__init__(train, val, tokenizer, list(pattern), num_codebooks, codebook_size, audio_front_end,
                         num_mel_bins, token_layout=token_layout, batch_size=batch_size, seed=seed)  # fmt: skip
        # Lightning saved this class's arguments only: the layout also reads the parent's (cmvn, dither, ...)
        for name, param in inspect.signature(QinYuDataModule.__init__).parameters.items():
            if param.default is not inspect.Parameter.empty:
                self.hparams.setdefault(name, param.default)
        self.identical = 0
        self.data: dict[str, list] = {}

    def prepare_data(self) -> None:
        pass  # nothing to check ahead: the pairs are read in setup

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        codec = CodecInfo("pairs", hp.num_codebooks, hp.codebook_size, 0.0, 0)
        self.data, self.identical = {}, 0
        for split in ("train", "val"):
            if hp[split] is not None:
                pairs, identical = read_pairs(hp[split], codec)
                self.identical += identical
                self.data[split] = [(self.layout.build(c), self.layout.build(r), ref) for _, c, r, ref in pairs]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        fn = partial(collate_pairs, pad_id=self.layout.ids.pad, num_codebooks=self.hparams.num_codebooks)
        return DataLoader(self.data[split], batch_size=self.hparams.batch_size, shuffle=shuffle, collate_fn=fn)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False) if "val" in self.data else []

    def state_dict(self) -> dict:
        return {}  # an epoch of pairs is short: a resumed run restarts its epoch

    def load_state_dict(self, state_dict: dict) -> None:
        pass
