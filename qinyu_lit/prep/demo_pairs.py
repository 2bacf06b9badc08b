"""Preference pairs for the demo (multi-task DPO): right vs wrong word, right vs wrong voice.

A pairs file is JSONL, one pair a line; ``chosen`` and ``rejected`` are whole conversations (the
common preference format): their prompts - every turn but the last, the system prompt and the agent
voice - are shared, the last assistant turns differ. Assistant speech is inline codes
``[num_codebooks][frames]``; ``task`` names the preference kind (reported separately)::

    {"key": "word00003", "task": "word", "system": "", "agent_speaker": null,
     "chosen":   [{"role": "user", "text": "hot"}, {"role": "assistant", "text": "cold"}],
     "rejected": [{"role": "user", "text": "hot"}, {"role": "assistant", "text": "sun"}]}

``word``: the demo's text task (reply each word's opposite); rejected = another word.
``voice``: the demo's TTS task in the prompt's agent voice; rejected = the same words in another voice.
Built from the demo corpus's own rules (``prep/demo.py``), so a model can learn the preference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.files import atomic_write_text
from .demo import PROMPTS, WORDS, agent_embedding, answer, demo_codes


def _turn(role: str, text: str, codes: np.ndarray | None = None) -> dict:
    return {"role": role, "text": text, **({"codes": codes.astype(int).tolist()} if codes is not None else {})}


def demo_pairs(count: int, seed: int = 0, speaker_dim: int = 16, num_codebooks: int = 8, codebook_size: int = 64) -> list[dict]:
    """``count`` pairs of each kind (word, voice), deterministic in ``seed``."""
    rng = np.random.default_rng([seed, 7])
    pairs = []
    for i in range(count):
        q = str(rng.choice(WORDS))
        right = answer(q)
        wrong = str(rng.choice([w for w in WORDS if w != right]))
        user = _turn("user", q)
        pairs.append({"key": f"word{seed:02d}{i:05d}", "task": "word", "system": "", "agent_speaker": None,
                      "chosen": [user, _turn("assistant", right)], "rejected": [user, _turn("assistant", wrong)]})
        voice = int(rng.integers(0, 3))
        other = (voice + 1 + int(rng.integers(0, 2))) % 3
        user = _turn("user", PROMPTS["tts"] + "\n" + q)
        said = [_turn("assistant", q, demo_codes(q, v, num_codebooks, codebook_size)) for v in (voice, other)]
        pairs.append({"key": f"voice{seed:02d}{i:05d}", "task": "voice", "system": "",
                      "agent_speaker": agent_embedding(voice, speaker_dim).tolist(),
                      "chosen": [user, said[0]], "rejected": [user, said[1]]})
    return pairs


def demo_pairs_cmd(out_dir: str = "data/demo_pairs", count: int = 48, val_count: int = 16, seed: int = 0,
                   speaker_dim: int = 16, codebook_size: int = 64) -> None:
    """Write the demo's preference pairs: ``OUT_DIR/train.jsonl`` and ``OUT_DIR/val.jsonl``.

    Args:
        out_dir: where to write (use the demo corpus's tokenizer, ``qinyu-lit demo-data``, to train on them).
        count: training pairs of each kind (word, voice).
        val_count: held-out pairs of each kind (another seed).
        seed: the training pairs' seed (held-out: ``seed + 1000``).
        speaker_dim: size of the agent voice vectors (the demo corpus's: 16).
        codebook_size: codes per codebook (the demo corpus's: 64).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, n, s in (("train", count, seed), ("val", val_count, seed + 1000)):
        rows = demo_pairs(n, s, speaker_dim, codebook_size=codebook_size)
        atomic_write_text(out / f"{name}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        print(f"wrote {len(rows)} pairs to {out / f'{name}.jsonl'}")
