"""The evaluation passes: each sample generated once, scored, written as one JSONL row.

Passes over an evaluation set (``PASSES``): ``asr`` (rows of task ``asr``: the reply's text against
the transcript), ``qa`` (``sqa`` / ``text`` / ``qa`` rows: exact match and contains-answer), ``tts``
(``tts`` / ``singing`` rows: the reply's speech decoded by the codec, transcribed by an ASR model and
scored against the text; the same generation gives speaker similarity, pitch against the reference
speech and the speed figures) and ``ablation`` (the ``tts`` pass with the speaker vector zeroed).

Components come in from the caller (``Components``): the model's reply function, the codec, the ASR
and speaker encoder, so this layer needs no checkpoint format and no downloads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from ..codec import valid_codes
from ..data.audio import read_audio
from .eval_sets import EvalRow
from .scoring import answer_scores, pitch_dtw, pitch_mse, speaker_similarity, text_errors, track_f0

FRAME_RATE = 12.5  # codec frames per second (Mimi and the demo rule codes)
PASSES = {  # pass -> (row tasks it reads, the --tasks that ask for it)
    "asr": (("asr",), ("asr",)),
    "qa": (("sqa", "text", "qa"), ("qa",)),
    "tts": (("tts", "singing"), ("tts", "ss", "pitch", "speed")),
    "ablation": (("tts", "singing"), ("ablation",)),
}
TASKS = ("asr", "tts", "ss", "pitch", "ablation", "qa", "speed")


class Skip(Exception):
    """A sample that cannot be scored: the message is its one report line."""


@dataclass
class Components:
    """What an evaluation needs besides the rows.

    ``reply(row, speaker, audio_sampler) -> Generated``: the model's reply (``speaker`` an array, or
    ``None`` for the row's own voice); ``codec`` decodes codes (``.decode``, ``.sample_rate``);
    ``asr.transcribe(wav, sample_rate, language) -> str``; ``speaker_encoder.embed(wav, sample_rate)``
    (or ``None``: no speaker similarity); ``speaker_dim``: the model's, for the zero vector of the
    ablation; ``has_audio``: False for a checkpoint without audio heads (speech passes are skipped).
    """

    reply: Callable
    codec: object = None
    asr: object = None
    speaker_encoder: object = None
    speaker_dim: int = 0
    has_audio: bool = True
    audio_dir: Path | None = None  # where decoded replies go as <pass>/<key>.wav (run_set sets it)


class FirstFrameClock:
    """Wraps the audio sampler: generation calls it first when the first audio frame is picked."""

    def __init__(self, pick):
        self.pick, self.first = pick, None

    def reset(self) -> None:
        self.first = None
        if hasattr(self.pick, "reset"):
            self.pick.reset()

    def __call__(self, logits):
        if self.first is None:
            self.first = time.perf_counter()
        return self.pick(logits)


def _generate(parts: Components, row: EvalRow, speaker) -> tuple:
    from ..model.sampling import greedy

    clock = FirstFrameClock(greedy)
    start = time.perf_counter()
    gen = parts.reply(row, speaker, clock)
    seconds = time.perf_counter() - start
    return gen, seconds, (clock.first - start) if clock.first is not None else None


def score_text_reply(parts: Components, row: EvalRow, pass_name: str) -> dict:
    """asr: errors against the transcript; qa: exact / contains the answer."""
    gen, seconds, _ = _generate(parts, row, None)
    out = {"hypothesis": gen.text, "gen_seconds": seconds}
    if pass_name == "qa":
        exact, contains = answer_scores(row.answer, gen.text)
        return out | {"reference": row.answer, "exact": exact, "contains": contains}
    errors, units = text_errors(row.reference, gen.text, row.language)
    return out | {"errors": errors, "units": units}


def score_speech_reply(parts: Components, row: EvalRow, pass_name: str) -> dict:
    """tts / ablation: generate -> decode -> transcribe -> WER; speaker similarity; pitch; speed."""
    if not parts.has_audio:
        raise Skip("the checkpoint has no audio heads: it cannot speak")
    speaker = np.zeros(parts.speaker_dim, np.float32) if pass_name == "ablation" else None
    gen, seconds, ttfa = _generate(parts, row, speaker)
    if gen.num_frames == 0:
        raise Skip(f"the reply has no speech frames (text: {gen.text[:40]!r})")
    codes, _ = valid_codes(gen.codes, int(parts.codec.codebook_size))
    wav, rate = parts.codec.decode(codes.numpy()), int(parts.codec.sample_rate)
    hyp = parts.asr.transcribe(wav, rate, row.language)
    errors, units = text_errors(row.reference, hyp, row.language)
    if parts.audio_dir is not None:  # to listen to, for TensorBoard and for judges left out (docs/evaluation.md)
        path = parts.audio_dir / pass_name / f"{row.key}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wav, rate, subtype="PCM_16")
    out = {"hypothesis": hyp, "reply_text": gen.text, "errors": errors, "units": units, "gen_seconds": seconds,
           "audio_seconds": gen.num_frames / FRAME_RATE, "first_frame_seconds": ttfa}  # fmt: skip
    if row.reference_audio:
        ref_wav, ref_rate = read_audio(row.reference_audio)
        if parts.speaker_encoder is not None:
            enc = parts.speaker_encoder
            out["ss"] = speaker_similarity(enc.embed(wav, rate), enc.embed(ref_wav, ref_rate))
        ref_f0, hyp_f0 = track_f0(ref_wav, ref_rate), track_f0(wav, rate)
        out["pitch_mse"], out["pitch_dtw"] = pitch_mse(ref_f0, hyp_f0), pitch_dtw(ref_f0, hyp_f0)
    return out


def rows_for(pass_name: str, rows: list[EvalRow]) -> list[EvalRow]:
    return [r for r in rows if r.task in PASSES[pass_name][0]]


def passes_for(tasks) -> list[str]:
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"--tasks: unknown {unknown}; choose from {list(TASKS)}")
    return [p for p, (_, asked_by) in PASSES.items() if set(asked_by) & set(tasks)]


def read_done(jsonl: Path) -> dict[tuple[str, str], dict]:
    """The rows an earlier (interrupted) run wrote: ``(pass, key) -> row``. A torn last line is dropped."""
    done = {}
    if jsonl.is_file():
        for line in jsonl.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[(row["pass"], row["key"])] = row
    return done


def run_set(parts: Components, rows: list[EvalRow], passes: list[str], jsonl: Path, label: str) -> list[dict]:
    """Every pass over ``rows``; rows already in ``jsonl`` are reused (resume), new ones appended as
    they finish, so an interruption loses at most the sample being generated."""
    done, parts = read_done(jsonl), replace(parts, audio_dir=jsonl.with_suffix(""))
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    if jsonl.is_file():  # drop a row torn by the interruption, so the next one starts on its own line
        text = jsonl.read_bytes()
        jsonl.write_bytes(text[: text.rfind(b"\n") + 1])
    results = []
    with jsonl.open("a") as sink:
        for pass_name in passes:
            todo = rows_for(pass_name, rows)
            if not todo:
                print(f"{label}: no rows for the {pass_name} pass (tasks {', '.join(PASSES[pass_name][0])}): skipped")
                continue
            score = score_text_reply if pass_name in ("asr", "qa") else score_speech_reply
            for row in tqdm(todo, desc=f"{label} {pass_name}", leave=False):
                if (pass_name, row.key) in done:
                    results.append(done[(pass_name, row.key)])
                    continue
                record = {"pass": pass_name, "key": row.key, "reference": row.reference}
                try:
                    record |= score(parts, row, pass_name)
                except Skip as e:
                    print(f"{label}: sample {row.key!r} ({pass_name}): skipped: {e}")
                    record["skipped"] = str(e)
                sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                sink.flush()
                results.append(record)
    return results
