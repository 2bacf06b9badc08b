"""``qinyu-lit evaluate``: the paper's measurable tables from one or more checkpoints, side by side.

    qinyu-lit evaluate checkpoints/tiny_sft/last.ckpt --demo_set eval/demo_set        # the demo, CPU
    qinyu-lit evaluate A.ckpt B.ckpt --tasks asr tts ss pitch ablation qa speed \\
        --set librispeech=data/eval/ls_test_clean.jsonl --set seedtts=data/eval/seedtts_en.jsonl \\
        --codec kyutai/mimi --asr openai/whisper-large-v3 --speaker_encoder microsoft/wavlm-base-plus-sv

This module wires the components (checkpoint, codec, ASR, speaker encoder: the offline ``prep/``
pieces are imported here, at the CLI level) into ``eval/tasks.py`` and writes the report with
``eval/report.py``. docs/evaluation.md explains the tables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .data.errors import QinYuError
from .data.features import resample
from .eval.eval_sets import EvalRow, read_eval_set
from .eval.report import figures, write_report
from .eval.tasks import TASKS, Components, Skip, passes_for, run_set
from .inference import check_codec, load_codec, load_with_persona, reply_to
from .tiny_configs import TINY_WAVLM


class TransformersASR:
    """Any transformers speech-recognition model by name or folder (Whisper, wav2vec2, ...)."""

    def __init__(self, model: str, device: str = "cpu"):
        from transformers import pipeline

        self.pipe = pipeline("automatic-speech-recognition", model=model, device=device)
        self.sample_rate = int(self.pipe.feature_extractor.sampling_rate)

    def transcribe(self, wav: np.ndarray, sample_rate: int, language: str = "en") -> str:
        wav = resample(np.asarray(wav, np.float32), sample_rate, self.sample_rate)  # e.g. Mimi's 24 kHz -> 16 kHz
        return self.pipe({"raw": wav, "sampling_rate": self.sample_rate})["text"]


def _asr(name: str, device: str):
    if name == "demo":
        from .prep.demo_eval import DemoASR

        return DemoASR()
    return TransformersASR(name, device)


def _speaker_encoder(name: str | None, dim: int, device: str):
    if name in (None, "none"):
        return None
    if name == "demo":
        from .prep.demo_eval import DemoVoiceEncoder

        return DemoVoiceEncoder(dim)
    from .prep.speakers import WavLMSpeakerEncoder

    return WavLMSpeakerEncoder(dict(TINY_WAVLM) if name == "tiny-wavlm" else name, device=device)


def _sets(specs: list[str], demo_set: str | None) -> dict[str, str]:
    sets = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise QinYuError(f"--set {spec!r}: give NAME=MANIFEST (e.g. --set librispeech=data/eval/ls.jsonl)")
        sets[name] = path
    if demo_set:
        from .prep.demo_eval import write_demo_eval_set

        manifest = Path(demo_set) / "manifest.jsonl"
        sets["demo"] = str(manifest if manifest.is_file() else write_demo_eval_set(demo_set))
    if not sets:
        raise QinYuError("no evaluation set: give --set NAME=MANIFEST (or --demo_set DIR for the demo's)")
    return sets


def _labels(checkpoints: list[str]) -> dict[str, str]:
    labels = {}
    for i, path in enumerate(checkpoints):
        p = Path(path)
        label = re.sub(r"[^\w.-]+", "_", f"{p.parent.name}_{p.stem}" if p.is_file() else p.name) or f"ckpt{i}"
        labels[label if label not in labels else f"{label}_{i}"] = path
    return labels


def _components(model, codec, asr, encoder, max_new_positions: int, card: dict | None = None) -> Components:
    """A persona checkpoint's card (system prompt, voice) fills rows that give neither, as ``generate`` does."""
    card = card or {}

    def reply(row: EvalRow, speaker, audio_sampler):
        if speaker is None:
            speaker = row.agent_speaker if row.agent_speaker else card.get("voice")
        try:
            return reply_to(model, text=row.prompt_text or None, audio=row.prompt_audio,
                            system=row.system or card.get("system_prompt", ""), speaker=speaker,
                            max_new_positions=max_new_positions, audio_sampler=audio_sampler)  # fmt: skip
        except ValueError as e:  # an input this checkpoint cannot take (inference.check_inputs)
            raise Skip(str(e)) from None

    return Components(reply, codec, asr, encoder, model.config.speaker_dim, model.config.num_codebooks > 0)


LIST_FLAGS = ("--tasks", "--set")


def evaluate_argv(rest: list[str]) -> list[str]:
    """``A B --tasks asr tts --set x=1.jsonl --set y=2.jsonl`` -> the JSON lists jsonargparse reads
    (``'["A","B"]' --tasks '["asr","tts"]' --set '["x=1.jsonl","y=2.jsonl"]'``)."""
    lists: dict[str, list[str]] = {"": []}
    out, current = [], ""
    for arg in rest:
        if arg.startswith("-"):
            flag = arg.split("=", 1)[0]
            current = flag if flag in LIST_FLAGS else None
            if current is None:
                out.append(arg)
            elif "=" in arg:
                lists.setdefault(current, []).append(arg.split("=", 1)[1])
            else:
                lists.setdefault(current, [])
        elif current is None:
            out.append(arg)  # the value of a plain flag
        else:
            lists.setdefault(current, []).append(arg)
    checkpoints = lists.pop("")
    positional = [json.dumps(checkpoints)] if checkpoints else []
    return positional + out + [x for flag, values in lists.items() for x in (flag, json.dumps(values))]


def evaluate_cmd(
    checkpoints: list[str],
    tasks: list[str] | None = None,
    set: list[str] | None = None,  # noqa: A002 - the flag is --set; the builtin is not used below
    demo_set: str | None = None,
    name: str = "default",
    out_dir: str = "eval",
    codec: str = "demo",
    asr: str = "demo",
    speaker_encoder: str = "demo",
    max_new_positions: int = 256,
    device: str = "cpu",
) -> None:
    """Evaluate checkpoints on evaluation sets: the paper's ASR, TTS, SS, pitch, ablation, QA and speed tables.

    Writes OUT_DIR/NAME/report.md (printed too), figures.json, per-sample rows
    OUT_DIR/NAME/<checkpoint>/<set>.jsonl (a rerun resumes from them) and TensorBoard scalars under
    OUT_DIR/NAME/tb. Two or more checkpoints: one column each and the difference.

    Args:
        checkpoints: Lightning checkpoints (.ckpt) or ``qinyu-lit export`` directories.
        tasks: any of asr tts ss pitch ablation qa speed (default: all).
        set: evaluation sets, NAME=MANIFEST (the ``data build`` manifest format; data_cards/EVAL_SETS.md).
        demo_set: a folder for the demo evaluation set (written when missing), evaluated as set ``demo``.
        name: the report's name: OUT_DIR/NAME/.
        out_dir: where reports go.
        codec: decodes the speech codes: ``demo`` (the demo's tones), ``tiny-mimi``, or a Mimi name / folder.
        asr: transcribes the spoken replies: ``demo`` (inverts the demo's tones) or a transformers ASR model.
        speaker_encoder: for speaker similarity: ``demo``, ``tiny-wavlm``, a WavLMForXVector name / folder, or ``none``.
        max_new_positions: generation limit per reply (text ids + audio frames).
        device: ``cpu`` or ``cuda``.
    """
    try:
        passes = passes_for(tasks or TASKS)
    except ValueError as e:
        raise QinYuError(str(e)) from None
    if asr == "demo" and codec != "demo":
        raise QinYuError(f"--asr demo reads the demo codec's tones; with --codec {codec} give a real ASR model (--asr NAME)")
    for path in checkpoints:
        if not Path(path).exists():
            raise QinYuError(f"{path}: no such checkpoint (.ckpt from qinyu-lit fit) or export directory")
    sets, labels, out = _sets(set or [], demo_set), _labels(checkpoints), Path(out_dir) / name
    read = {s: read_eval_set(m) for s, m in sets.items()} if all(Path(m).is_file() for m in sets.values()) else None
    if read is None:
        raise QinYuError("no such manifest: " + ", ".join(m for m in sets.values() if not Path(m).is_file()))
    for lines in (skips for _, skips in read.values()):
        for line in lines:
            print(f"skipped while reading: {line}")
    asr_model = _asr(asr, device) if {"tts", "ablation"} & {*passes} else None
    by_checkpoint = {}
    for label, path in labels.items():
        model, card = load_with_persona(path, device=device)
        codec_model = load_codec(codec, device=device)
        check_codec(model, codec_model)
        encoder = _speaker_encoder(speaker_encoder, model.config.speaker_dim, device) if "tts" in passes else None
        parts = _components(model, codec_model, asr_model, encoder, max_new_positions, card)
        by_checkpoint[label] = {s: figures(run_set(parts, rows, passes, out / label / f"{s}.jsonl", f"{label}/{s}"))
                                for s, (rows, _) in read.items()}  # fmt: skip
    text = write_report(out, by_checkpoint, {s: skips for s, (_, skips) in read.items()}, labels)
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'figures.json'}, per-sample rows and TensorBoard under {out}")
