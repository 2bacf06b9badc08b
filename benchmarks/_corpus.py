"""A synthetic corpus with realistic lengths for the benchmarks (not for training: content is random).

Lengths follow the paper's data kinds at 12.5 Hz codes and 16 kHz user speech:

* ``tts``: 1-3 sentences of text, 2-15 s of assistant speech (25-190 frames);
* ``text``: text question and answer, 20-400 tokens;
* ``dialogue_text``: 2-4 turns, typed user text, spoken assistant replies of 3-25 s;
* ``asr``: 2-25 s of user speech (FLAC) -> its transcript;
* ``dialogue_speech``: 2-4 turns, spoken user turns (2-15 s) and spoken assistant replies (3-25 s);
* ``long``: long-form speech (singing, stories) of 60-300 s - these are the samples near/over 10K tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qinyu_lit.data.schema import CodecInfo, Sample, Turn
from qinyu_lit.prep.demo import WORDS
from qinyu_lit.prep.writer import write_shards

CODEC = CodecInfo("synthetic", 8, 1024, 12.5, 16000)
NO_USER_AUDIO = ("tts", "text", "dialogue_text", "long")
WITH_USER_AUDIO = ("asr", "dialogue_speech")


def _text(rng, lo, hi) -> str:
    return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi))))


def _codes(rng, seconds) -> np.ndarray:
    return rng.integers(0, 1024, (8, max(1, int(seconds * 12.5))), dtype=np.int16)


def _speech(rng, seconds) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    f = rng.uniform(120, 300)
    return (
        0.3 * np.sin(2 * np.pi * f * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        + 0.01 * rng.standard_normal(len(t))
    ).astype(np.float32)


def sample(task: str, i: int, rng) -> Sample:
    spk = rng.standard_normal(192).astype(np.float32)
    if task == "tts":
        turns = [
            Turn("user", "Convert the text to speech.\n" + _text(rng, 5, 40)),
            Turn("assistant", _text(rng, 5, 40), codes=_codes(rng, rng.uniform(2, 15))),
        ]
    elif task == "text":
        turns = [Turn("user", _text(rng, 5, 60)), Turn("assistant", _text(rng, 10, 300))]
    elif task == "long":
        turns = [
            Turn("user", "Please sing this for me."),
            Turn("assistant", _text(rng, 100, 500), codes=_codes(rng, rng.uniform(60, 300))),
        ]
    elif task == "asr":
        sec = rng.uniform(2, 25)
        turns = [
            Turn("user", "Convert the speech to text.", _speech(rng, sec), 16000),
            Turn("assistant", _text(rng, int(2 * sec), int(3 * sec) + 1)),
        ]
    elif task in ("dialogue_text", "dialogue_speech"):
        turns = []
        for _ in range(int(rng.integers(1, 3))):
            if task == "dialogue_speech":
                turns.append(Turn("user", "", _speech(rng, rng.uniform(2, 15)), 16000, speaker=spk))
            else:
                turns.append(Turn("user", _text(rng, 5, 40)))
            turns.append(Turn("assistant", _text(rng, 10, 60), codes=_codes(rng, rng.uniform(3, 25))))
    else:
        raise ValueError(task)
    agent = spk if any(t.codes is not None for t in turns) else None
    return Sample(
        f"{task}{i:07d}",
        "conversation" if task.startswith("dialogue") else ("singing" if task == "long" else task),
        turns,
        CODEC,
        agent_speaker=agent,
    )


def user_audio_seconds(s: Sample) -> float:
    return sum(len(t.audio) / t.sample_rate for t in s.turns if t.audio is not None)


def make(
    out_dir: str | Path, tasks: dict[str, int], samples_per_shard: int = 200, seed: int = 0
) -> tuple[Path, float]:
    """Write ``tasks`` ({task: count}) mixed into shards; returns (dir, total user-audio seconds)."""
    rng = np.random.default_rng(seed)
    samples = [sample(t, i, rng) for t, n in tasks.items() for i in range(n)]
    samples = [samples[i] for i in rng.permutation(len(samples))]
    write_shards(samples, out_dir, samples_per_shard)
    return Path(out_dir), sum(map(user_audio_seconds, samples))
