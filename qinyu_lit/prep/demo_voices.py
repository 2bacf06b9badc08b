"""Described demo voices for VoiceDesign: (description, speaker embedding) pairs with a known answer.

8 voice classes = gender (man, woman) x age (young, senior) x temperament (calm, cheerful). Each class has
a fixed random centroid embedding; a sample is its centroid plus noise, described by a sentence that
names the three attributes and an identity ("a young woman, a baker, calm"). Validation descriptions
use identities that training never shows, so a model must read the attributes, not memorise sentences.

``qinyu-lit demo-data`` writes ``voices/train.jsonl`` and ``voices/val.jsonl`` (rows
``{"description", "embedding": [...], "voice_class"}``, the format ``data/voice_design.py`` reads) and
``voices/centroids.npy`` ``[8, D]`` (rows in ``VOICE_CLASSES`` order), next to the speech corpus.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

GENDERS, AGES, TEMPERS = ("man", "woman"), ("young", "senior"), ("calm", "cheerful")
VOICE_CLASSES = tuple(f"{a} {g}, {t}" for g, a, t in itertools.product(GENDERS, AGES, TEMPERS))
TRAIN_IDENTITIES = ("a baker", "a sailor", "a teacher", "a doctor", "a farmer", "a pilot", "a painter", "a judge",
                    "a miner", "a singer", "a guard", "a monk")  # fmt: skip
VAL_IDENTITIES = ("a poet", "a smith", "a nurse", "a clerk")  # never seen in training
TEMPLATES = (
    "a {age} {gender}, {identity}, {temper}",
    "{identity}: a {temper} {age} {gender}",
    "the voice of a {temper} {age} {gender} who is {identity}",
)
NOISE = 0.3  # per-dimension noise around a unit-variance centroid: cosine to the centroid ~0.96


def voice_centroids(dim: int = 16, seed: int = 0) -> np.ndarray:
    """``[8, dim]`` float32, one fixed random centroid per class of ``VOICE_CLASSES``."""
    return np.random.default_rng([seed, 77]).standard_normal((len(VOICE_CLASSES), dim)).astype(np.float32)


def voice_pairs(identities: tuple[str, ...], per_class: int, dim: int, seed: int) -> list[dict]:
    """``per_class`` described samples of every class, identities and templates cycled."""
    rng = np.random.default_rng([seed, 78])
    centroids = voice_centroids(dim)
    rows = []
    for c, (gender, age, temper) in enumerate(itertools.product(GENDERS, AGES, TEMPERS)):
        for i in range(per_class):
            identity = identities[(i + c) % len(identities)]
            template = TEMPLATES[(i // len(identities) + i) % len(TEMPLATES)]
            text = template.format(age=age, gender=gender, temper=temper, identity=identity)
            emb = centroids[c] + NOISE * rng.standard_normal(dim).astype(np.float32)
            rows.append({"description": text, "embedding": [float(v) for v in emb], "voice_class": c})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def write_demo_voices(out_dir: str | Path, dim: int = 16, train_per_class: int = 48, val_per_class: int = 8) -> Path:
    """Write ``train.jsonl``, ``val.jsonl`` and ``centroids.npy`` under ``out_dir``; returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, identities, count, seed in (("train", TRAIN_IDENTITIES, train_per_class, 0), ("val", VAL_IDENTITIES, val_per_class, 1)):
        rows = voice_pairs(identities, count, dim, seed)
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    np.save(out / "centroids.npy", voice_centroids(dim), allow_pickle=False)
    return out
