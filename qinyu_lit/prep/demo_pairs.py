"""Preference pairs for the demo (multi-task DPO): right vs wrong word, right vs wrong voice.

Written as preference shards (schema v2, ``data_cards/SCHEMA.md``): each sample is an ordinary
conversation whose last turn is the chosen reply, plus the ``rejected`` reply to the same prompt and
the pair's kind in ``preference`` (reported separately in TensorBoard):

``word``: the demo's text task (reply each word's opposite); rejected = another word.
``voice``: the demo's TTS task in the prompt's agent voice; rejected = the same words in another voice.
Built from the demo corpus's own rules (``prep/demo.py``), so a model can learn the preference. Pairs
from your own audio go through ``qinyu-lit data build`` (the manifest's ``chosen`` / ``rejected``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.schema import CodecInfo, Sample, Turn
from .demo import PROMPTS, SAMPLE_RATE, WORDS, agent_embedding, answer, demo_codes
from .writer import write_shards

AGENT_VOICES = 3  # the demo corpus's agent voices (``demo_samples``)
# every (word, voice, rejected voice) the demo can pair: 16 words x 3 voices x 2 other voices = 96
COMBINATIONS = [(w, v, (v + 1 + k) % AGENT_VOICES) for w in WORDS for v in range(AGENT_VOICES) for k in range(AGENT_VOICES - 1)]


def demo_pairs(count: int, seed: int = 0, speaker_dim: int = 16, num_codebooks: int = 8, codebook_size: int = 64) -> list[Sample]:
    """``count`` pairs of each kind (word, voice), deterministic in ``seed``.

    Each seed walks the 96 ``COMBINATIONS`` in its own random order (then again), so 96 pairs or more
    cover every one. Why: a toy model learns the (word, voice) combinations it is shown rather than a
    rule for the others, so random draws that miss a combination leave held-out pairs it cannot know.
    """
    rng = np.random.default_rng([seed, 7])
    codec = CodecInfo("demo-rule", num_codebooks, codebook_size, 12.5, SAMPLE_RATE)
    order = rng.permutation(len(COMBINATIONS))
    pairs = []
    for i in range(count):
        q, voice, other = COMBINATIONS[order[i % len(order)]]
        right = answer(q)
        wrong = str(rng.choice([w for w in WORDS if w != right]))
        pairs.append(Sample(f"word{seed:02d}{i:05d}", "text", [Turn("user", q), Turn("assistant", right)], codec,
                            rejected=Turn("assistant", wrong), preference="word"))  # fmt: skip
        said = [demo_codes(q, v, num_codebooks, codebook_size) for v in (voice, other)]
        turns = [Turn("user", PROMPTS["tts"] + "\n" + q), Turn("assistant", q, codes=said[0])]
        pairs.append(Sample(f"voice{seed:02d}{i:05d}", "tts", turns, codec, agent_speaker=agent_embedding(voice, speaker_dim),
                            rejected=Turn("assistant", q, codes=said[1]), preference="voice"))  # fmt: skip
    return pairs


def demo_pairs_cmd(out_dir: str = "data/demo_pairs", count: int = 128, val_count: int = 16, seed: int = 0,
                   speaker_dim: int = 16, codebook_size: int = 64, samples_per_shard: int = 64) -> None:  # fmt: skip
    """Write the demo's preference shards: ``OUT_DIR/train`` and ``OUT_DIR/val``.

    Args:
        out_dir: where to write (use the demo corpus's tokenizer, ``qinyu-lit demo-data``, to train on them).
        count: training pairs of each kind (word, voice); 96 or more cover every (word, voice, other voice).
        val_count: held-out pairs of each kind (another seed).
        seed: the training pairs' seed (held-out: ``seed + 1000``).
        speaker_dim: size of the agent voice vectors (the demo corpus's: 16).
        codebook_size: codes per codebook (the demo corpus's: 64).
        samples_per_shard: pairs per shard.
    """
    for name, n, s in (("train", count, seed), ("val", val_count, seed + 1000)):
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        shards = write_shards(demo_pairs(n, s, speaker_dim, codebook_size=codebook_size), folder, samples_per_shard)
        print(f"wrote {2 * n} pairs in {len(shards)} shard(s) to {folder}")
