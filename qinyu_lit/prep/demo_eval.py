"""The demo's evaluation pieces: a demo ASR and voice encoder that invert the demo codec's tone
rule, and a small demo evaluation set, so ``qinyu-lit evaluate`` runs every task on CPU with
nothing downloaded.

``DemoRuleCodec`` plays each 80 ms frame as a tone of ``200 + 15 * code`` Hz (codebook 0), and
the demo's codebook-0 codes of a word are ``(hash(word) + 11 * frame + 13 * voice) % 64``
(``demo.demo_codes``). The demo ASR reads each frame's pitch back to its code, then finds the
voice whose words explain the most frames and spells those words: speech in a voice the model
was not asked for, or codes that follow no voice, come out as wrong or missing words. The demo
voice encoder returns that voice's agent embedding, so speaker similarity is 1.0 for the right
voice and lower for another. Neither is a model of real speech.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from ..codec import DEMO_SAMPLE_RATE, DemoRuleCodec
from .demo import PROMPTS, WORDS, agent_embedding, answer, demo_codes, demo_speech

FRAME = int(DEMO_SAMPLE_RATE / 12.5)  # samples per codec frame
VOICES = (0, 1, 2)  # the demo corpus's agent voices


def frame_codes(wav: np.ndarray, sample_rate: int = DEMO_SAMPLE_RATE) -> list[int]:
    """The codebook-0 code of each 80 ms frame: its strongest frequency, inverted from 200 + 15 * code."""
    if sample_rate != DEMO_SAMPLE_RATE:
        raise ValueError(f"the demo ASR reads {DEMO_SAMPLE_RATE} Hz audio (the demo codec's), got {sample_rate} Hz")
    wav = np.asarray(wav, dtype=np.float64)
    codes = []
    for start in range(0, len(wav) - FRAME + 1, FRAME):
        spectrum = np.abs(np.fft.rfft(wav[start : start + FRAME] * np.hanning(FRAME), n=8 * FRAME))
        freq = np.argmax(spectrum) * DEMO_SAMPLE_RATE / (8 * FRAME)
        codes.append(int(np.clip(round((freq - 200) / 15), 0, 63)))
    return codes


def _parse(codes: list[int], voice: int) -> tuple[list[str], int]:
    """Greedy longest-match of the voice's word code sequences; returns (words, frames explained)."""
    table = {w: list(demo_codes(w, voice)[0]) for w in WORDS}
    words, i, explained = [], 0, 0
    while i < len(codes):
        best = max((w for w, seq in table.items() if codes[i : i + len(seq)] == seq), key=lambda w: len(table[w]),
                   default=None)  # fmt: skip
        if best is None:
            i += 1  # a frame no word of this voice starts with
            continue
        words.append(best)
        explained += len(table[best])
        i += len(table[best])
    return words, explained


def recognise(wav: np.ndarray, sample_rate: int = DEMO_SAMPLE_RATE) -> tuple[str, int | None]:
    """``(text, voice)``: the voice whose words explain the most frames (None when none explains any)."""
    codes = frame_codes(wav, sample_rate)
    best_words, best_voice, best_explained = [], None, 0
    for voice in VOICES:
        words, explained = _parse(codes, voice)
        if explained > best_explained:
            best_words, best_voice, best_explained = words, voice, explained
    return " ".join(best_words), best_voice


class DemoASR:
    """``transcribe(wav, sample_rate, language)``: the demo codec's tones -> the demo's words."""

    def transcribe(self, wav: np.ndarray, sample_rate: int, language: str = "en") -> str:
        return recognise(wav, sample_rate)[0]


class DemoVoiceEncoder:
    """``embed(wav, sample_rate)``: the agent embedding of the recognised demo voice (zeros for none)."""

    def __init__(self, dim: int = 16):
        self.dim = dim

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        voice = recognise(wav, sample_rate)[1]
        return agent_embedding(voice, self.dim) if voice is not None else np.zeros(self.dim, np.float32)


def _sentences(rng: np.random.Generator, count: int, max_words: int = 2) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, max_words + 1)))) for _ in range(count)]


def write_demo_eval_set(out_dir: str | Path, per_task: int = 8, speaker_dim: int = 16, seed: int = 7) -> Path:
    """``out_dir/manifest.jsonl`` with ``per_task`` asr, sqa and tts rows (wavs, voice vectors beside
    it): demo sentences not drawn with the training seed. Returns the manifest path.

    The tts rows are one word each: the README's tiny demo speaks single words reliably, and two-word texts
    only about half the time (measured after its recipe: TTS WER 58% on 16 texts of one or two words, all
    the one-word ones right), so one word is the set on which its speech can be judged at all."""
    out = Path(out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    rng, codec, rows = np.random.default_rng(seed), DemoRuleCodec(), []
    for voice in VOICES:
        np.save(out / f"voice{voice}.npy", agent_embedding(voice, speaker_dim), allow_pickle=False)
    for i, text in enumerate(_sentences(rng, per_task)):
        sf.write(out / "wav" / f"asr{i}.wav", demo_speech(text, i % 8), DEMO_SAMPLE_RATE)
        rows.append({"key": f"asr{i}", "task": "asr", "turns": [
            {"role": "user", "text": PROMPTS["asr"], "audio": f"wav/asr{i}.wav"}, {"role": "assistant", "text": text}]})
    for i, text in enumerate(_sentences(rng, per_task)):
        sf.write(out / "wav" / f"sqa{i}.wav", demo_speech(text, i % 8), DEMO_SAMPLE_RATE)
        rows.append({"key": f"sqa{i}", "task": "sqa", "answer": answer(text), "turns": [
            {"role": "user", "text": "", "audio": f"wav/sqa{i}.wav"}, {"role": "assistant", "text": answer(text)}]})
    for i, text in enumerate(_sentences(rng, per_task, max_words=1)):
        voice = VOICES[i % len(VOICES)]  # the reference speech: the rule codes of the voice, played by the codec
        sf.write(out / "wav" / f"tts{i}.wav", codec.decode(demo_codes(text, voice)), DEMO_SAMPLE_RATE)
        rows.append({"key": f"tts{i}", "task": "tts", "agent_speaker": f"voice{voice}.npy", "turns": [
            {"role": "user", "text": PROMPTS["tts"] + "\n" + text},
            {"role": "assistant", "text": text, "audio": f"wav/tts{i}.wav"}]})  # fmt: skip
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest
