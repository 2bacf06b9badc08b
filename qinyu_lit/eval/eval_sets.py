"""Evaluation sets: manifests in the format ``qinyu-lit data build`` reads, one row per sample.

The row's last user turn is the prompt (``text`` and/or ``audio``), its last assistant turn the
reference (``text``; ``audio`` = reference speech for speaker similarity and pitch), ``agent_speaker``
the voice to speak in and ``language`` picks WER or per-character CER. One field is for evaluation
only: ``answer``, the short answer a QA row is scored against (default: the reference text)::

    {"key": "tc-0001", "task": "asr", "language": "en",
     "turns": [{"role": "user", "text": "Convert the speech to text.", "audio": "wav/1089-134686-0000.flac"},
               {"role": "assistant", "text": "HE HOPED THERE WOULD BE STEW FOR DINNER"}]}

A row that cannot be used (not JSON, no turns, a missing file, an empty reference, audio at a rate
below the model's front end) is skipped with one line naming the file, line, key and field; the
report counts the skips.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

MIN_SAMPLE_RATE = 16000  # the encoders' front ends and the demo codec run at 16 kHz; upsampling cannot restore a band


@dataclass
class EvalRow:
    """One evaluation sample (paths absolute)."""

    key: str
    task: str
    prompt_text: str
    reference: str
    prompt_audio: str | None = None
    reference_audio: str | None = None
    agent_speaker: str | None = None
    system: str = ""
    language: str = "en"
    answer: str = ""


def _path(base: Path, value: str | None) -> str | None:
    if not value:
        return None
    p = Path(value)
    return str(p if p.is_absolute() else base / p)


def _check_audio(path: str, field: str) -> str | None:
    """Why the audio cannot be used, or None."""
    if not Path(path).is_file():
        return f"{field} {path}: no such file"
    try:
        rate = sf.info(path).samplerate
    except Exception as e:  # soundfile raises several types for garbage
        return f"{field} {path}: not a readable audio file ({type(e).__name__})"
    if rate < MIN_SAMPLE_RATE:
        return f"{field} {path}: sample rate {rate} Hz, below the {MIN_SAMPLE_RATE} Hz the model's audio takes"
    return None


def parse_row(obj: dict, base: Path, line: int) -> EvalRow:
    """A manifest row -> ``EvalRow``; raises ``ValueError`` with the field when it cannot be used."""
    turns = obj.get("turns") or []
    users = [t for t in turns if t.get("role") == "user"]
    helpers = [t for t in turns if t.get("role") == "assistant"]
    if not users or not helpers:
        raise ValueError("turns: needs a user turn (the prompt) and an assistant turn (the reference)")
    user, ref = users[-1], helpers[-1]
    row = EvalRow(
        key=str(obj.get("key") or f"line{line}"),
        task=str(obj.get("task", "")),
        prompt_text=user.get("text") or "",
        reference=(ref.get("text") or "").strip(),
        prompt_audio=_path(base, user.get("audio")),
        reference_audio=_path(base, ref.get("audio")),
        agent_speaker=_path(base, obj.get("agent_speaker")),
        system=obj.get("system") or "",
        language=obj.get("language") or "en",
    )
    row.answer = str(obj.get("answer") or row.reference)
    if not row.reference:
        raise ValueError("turns[-1].text: empty reference")
    for field, path in (("user audio", row.prompt_audio), ("assistant audio", row.reference_audio)):
        why = path and _check_audio(path, field)
        if why:
            raise ValueError(why)
    if row.agent_speaker and not Path(row.agent_speaker).is_file():
        raise ValueError(f"agent_speaker {row.agent_speaker}: no such file")
    return row


def read_eval_set(manifest: str) -> tuple[list[EvalRow], list[str]]:
    """``(usable rows, one line per skipped row)``."""
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation set {manifest}: no such manifest")
    rows, skipped = [], []
    for n, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        obj = None
        try:
            obj = json.loads(text)
            rows.append(parse_row(obj, path.parent, n))
        except (ValueError, AttributeError) as e:
            key = obj.get("key") if isinstance(obj, dict) else None
            skipped.append(f"{manifest}:{n}: sample {key!r}: {e}")
    return rows, skipped
