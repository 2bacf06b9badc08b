"""A deterministic demo corpus that qinyu-lit makes itself: no downloads, every task type.

Everything is a pure function of the seed, so two machines make identical shards:

* the text: questions of 1-2 of 16 words; the answer to a question is each word's opposite
  (``OPPOSITES``), ASR / TTS / singing replies repeat the words;
* user speech is real audio (FLAC): each word is a short tone whose pitch depends on the
  word (70 Hz apart) and the speaker, so the encoder input carries the content;
* assistant speech codes ``[8, T]`` come from a fixed content-to-codes rule (each word is
  2-4 frames whose codes depend on the word, the frame, the codebook and the voice), so a
  tiny model can learn them - a randomly initialised codec would emit constant codes;
* speaker embeddings are fixed random vectors per voice; the agent voice is the mean of
  100 noisy "utterance" embeddings of that voice, as in the paper.

``make_demo_corpus(out_dir)`` writes ``train/`` and ``val/`` shards, a byte-level BPE
tokenizer trained on the corpus text (``tokenizer/``), the demo voice ``voice.npy`` and the
spoken demo question ``question.wav`` (the README's ``generate`` example). ``DemoRuleCodec``
is a toy decoder of the rule codes (tones, not speech) for ``generate --codec demo``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..codec import DemoRuleCodec  # noqa: F401 - moved below prep/ (inference decodes with it)
from ..data.schema import CodecInfo, Sample, Turn
from ..data.tokenizer import train_demo_tokenizer
from .demo_voices import write_demo_voices
from .writer import write_shards

# 16 words in 8 pairs of opposites. The demo's question -> answer rule: every word is answered
# by its opposite, in order ("hot sun" -> "cold moon"), so a tiny model can learn it in
# the README's few minutes and the reply shows whether it did. Few words, each its own pitch.
OPPOSITES = {"sun": "moon", "day": "night", "hot": "cold", "up": "down",
             "big": "small", "yes": "no", "black": "white", "left": "right"}  # fmt: skip
OPPOSITES.update({b: a for a, b in list(OPPOSITES.items())})
WORDS = tuple(OPPOSITES)
# demo-data speaks it into question.wav; the rule's answer: "cold". One word: after the tiny recipe all 16 spoken
# one-word questions were answered right, two-word ones 14 of 35 (a 2-layer toy model; README, Generating)
DEMO_QUESTION = "hot"
CHARACTERS = {
    "captain": "You are Captain Mira, a calm starship captain who speaks briefly and kindly.",
    "grandpa": "You are Grandpa Lin, a warm storyteller who loves old songs and tea.",
    "robot": "You are Unit Seven, a cheerful robot who is curious about human feelings.",
}
# The demo personas (``qinyu-lit demo-persona``): each answers with the demo's opposites rule, then says its
# catchphrase word (one token of the demo tokenizer), in its own voice - voices 3-5, none of the SFT corpus's
# agent voices 0-2, so the rule codes (which depend on the voice) show whose voice a reply is in.
PERSONAS = {"captain": (3, "calm"), "grandpa": (4, "tea"), "robot": (5, "curious")}  # name -> (voice, catchphrase)
PROMPTS = {
    "asr": "Convert the speech to text.",
    "tts": "Convert the text to speech.",
    "singing": "Please sing this for me.",
}
SAMPLE_RATE = 16000


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "little")


def demo_codes(text: str, voice: int, num_codebooks: int = 8, codebook_size: int = 64, stretch: int = 0) -> np.ndarray:
    """The content-to-codes rule: [num_codebooks, frames] int16, a pure function of its inputs."""
    frames = []
    for word in text.lower().split():
        h = _word_hash(word.strip(".,?!"))
        for f in range(2 + h % 3 + stretch):
            frames.append([(h + 37 * j + 11 * f + 13 * voice) % codebook_size for j in range(num_codebooks)])
    return np.asarray(frames, dtype=np.int16).T


def demo_speech(text: str, voice: int) -> np.ndarray:
    """Real audio for ``text``: one 0.12 s tone per word, pitch from the word and the voice."""
    t = np.arange(int(0.12 * SAMPLE_RATE)) / SAMPLE_RATE
    parts = []
    for word in text.lower().split():
        word = word.strip(".,?!")
        # the demo's words are 70 Hz apart and a voice shifts them by < 35 Hz: each word is audible
        step = WORDS.index(word) if word in WORDS else _word_hash(word) % 48 / 3
        freq = 200 + 70 * step + (voice % 8) * 4
        envelope = np.hanning(len(t))
        parts.append(0.3 * envelope * np.sin(2 * np.pi * freq * t))
        parts.append(np.zeros(int(0.03 * SAMPLE_RATE)))
    return np.concatenate(parts).astype(np.float32)


def voice_embedding(voice: int, dim: int) -> np.ndarray:
    return np.random.default_rng(1000 + voice).standard_normal(dim).astype(np.float32)


def agent_embedding(voice: int, dim: int, num_utterances: int = 100) -> np.ndarray:
    """Mean over ``num_utterances`` noisy utterance embeddings of one voice (paper: 100)."""
    rng = np.random.default_rng(2000 + voice)
    base = voice_embedding(voice, dim)
    return (base + 0.1 * rng.standard_normal((num_utterances, dim))).mean(0).astype(np.float32)


def _sentence(rng: np.random.Generator, lo: int = 1, hi: int = 2) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(lo, hi + 1))))


def _answer(question: str) -> str:
    """The demo's deterministic answer, so question -> answer is learnable: each word's opposite."""
    return " ".join(OPPOSITES.get(w, w) for w in question.split())


def answer(question: str) -> str:
    """What a model trained on the demo corpus should reply to ``question`` (sqa, text, conversation)."""
    return _answer(question.lower())


def persona_answer(question: str, name: str) -> str:
    """A demo persona's reply: the opposites answer, then its catchphrase ("hot sun" -> "cold moon calm")."""
    return f"{answer(question)} {PERSONAS[name][1]}"


def demo_samples(task: str, count: int, seed: int, speaker_dim: int, num_codebooks: int, codebook_size: int):
    rng = np.random.default_rng([seed, sum(map(ord, task))])
    codec = CodecInfo("demo-rule", num_codebooks, codebook_size, 12.5, SAMPLE_RATE)

    def codes(text, voice, stretch=0):
        return demo_codes(text, voice, num_codebooks, codebook_size, stretch)

    for i in range(count):
        key = f"{task}{seed:02d}{i:05d}"
        user_voice, agent_voice = int(rng.integers(0, 8)), int(rng.integers(0, 3))
        user_spk = voice_embedding(100 + user_voice, speaker_dim)
        agent = agent_embedding(agent_voice, speaker_dim)
        q = _sentence(rng)
        if task == "asr":
            turns = [Turn("user", PROMPTS["asr"], demo_speech(q, user_voice), SAMPLE_RATE), Turn("assistant", q)]
            yield Sample(key, task, turns, codec)
        elif task == "tts":
            turns = [Turn("user", PROMPTS["tts"] + "\n" + q), Turn("assistant", q, codes=codes(q, agent_voice))]
            yield Sample(key, task, turns, codec, agent_speaker=agent)
        elif task == "sqa":
            turns = [Turn("user", "", demo_speech(q, user_voice), SAMPLE_RATE, speaker=user_spk), Turn("assistant", _answer(q))]
            yield Sample(key, task, turns, codec)
        elif task == "text":
            yield Sample(key, task, [Turn("user", q), Turn("assistant", _answer(q))], codec)
        elif task in ("conversation", "roleplay"):
            q2 = _sentence(rng)
            turns = [
                Turn("user", "", demo_speech(q, user_voice), SAMPLE_RATE, speaker=user_spk),
                Turn("assistant", _answer(q), codes=codes(_answer(q), agent_voice)),
                Turn("user", "", demo_speech(q2, user_voice), SAMPLE_RATE, speaker=user_spk),
                Turn("assistant", _answer(q2), codes=codes(_answer(q2), agent_voice)),
            ]
            system = ""
            if task == "roleplay":
                name = sorted(CHARACTERS)[agent_voice % len(CHARACTERS)]
                system = CHARACTERS[name]
            yield Sample(key, task, turns, codec, system=system, agent_speaker=agent)
        elif task == "singing":
            lyric = _sentence(rng, 2, 4)
            turns = [
                Turn("user", PROMPTS["singing"], demo_speech(lyric, user_voice), SAMPLE_RATE, speaker=user_spk),
                Turn("assistant", lyric, codes=codes(lyric, agent_voice, stretch=2)),  # sung words last longer
            ]
            yield Sample(key, task, turns, codec, agent_speaker=agent)
        else:
            raise ValueError(f"no demo generator for task {task!r}")


def write_demo_voice_and_question(out_dir: Path, speaker_dim: int) -> None:
    """``voice.npy`` (agent voice 0, as the training samples carry it) and ``question.wav`` (the
    demo question, spoken by user voice 0): what the README's ``generate`` example takes."""
    import soundfile

    np.save(out_dir / "voice.npy", agent_embedding(0, speaker_dim), allow_pickle=False)
    soundfile.write(out_dir / "question.wav", demo_speech(DEMO_QUESTION, 0), SAMPLE_RATE)


DEMO_TASKS = ("asr", "tts", "sqa", "text", "conversation", "roleplay", "singing")


def make_demo_corpus(
    out_dir: str | Path,
    samples_per_task: int = 384,  # fewer: the tiny recipe memorises them and misses the validation ones
    val_samples_per_task: int = 4,
    samples_per_shard: int = 32,
    speaker_dim: int = 16,
    num_codebooks: int = 8,
    codebook_size: int = 64,
    seed: int = 0,
    tasks: tuple[str, ...] = DEMO_TASKS,
) -> Path:
    """Write ``out_dir/{train,val}/shard-*.tar``, ``out_dir/tokenizer``, ``voice.npy`` and
    ``question.wav`` (``write_demo_voice_and_question``). Returns ``out_dir``."""
    out_dir = Path(out_dir)
    args = dict(speaker_dim=speaker_dim, num_codebooks=num_codebooks, codebook_size=codebook_size)
    for split, count, split_seed in (("train", samples_per_task, seed), ("val", val_samples_per_task, seed + 1)):
        samples = [s for task in tasks for s in demo_samples(task, count, split_seed, **args)]
        order = np.random.default_rng(split_seed).permutation(len(samples))  # mix tasks within shards
        write_shards([samples[i] for i in order], out_dir / split, samples_per_shard)
    # the chat template's words repeat in every sample: weight them so each is one token
    texts = ["system\n", "user\n", "assistant\n"] * 50 + list(WORDS) * 10
    texts += [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 5  # " word" too: one token each
    texts += list(PROMPTS.values()) * 5 + list(CHARACTERS.values())
    train_demo_tokenizer(texts, out_dir / "tokenizer", vocab_size=768)
    write_demo_voice_and_question(out_dir, speaker_dim)
    write_demo_voices(out_dir / "voices", speaker_dim)  # described voices for VoiceDesign (prep/demo_voices.py)
    return out_dir
