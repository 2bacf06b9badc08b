"""Evaluation figures from per-sample rows, and the report: markdown tables, JSON, TensorBoard.

``figures(rows)`` turns one checkpoint's rows on one set into named figures (``asr.wer``,
``tts.ss``, ``ablation.wer`` ...). ``markdown(figures_by_checkpoint)`` lays them out as the paper's
tables, one per task, one column per checkpoint and a last column with the difference
(last - first) when there are two or more.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# (title, [(figure, row label, scale)]): the paper's tables that can be measured at any scale
TABLES = [
    ("ASR (paper Table 6): WER / CER % of the text reply to speech", [("asr.wer", "WER/CER %", 100)]),
    ("TTS (paper Table 7, Seed-TTS style): WER / CER % of the spoken reply, through the ASR", [("tts.wer", "WER/CER %", 100)]),
    ("Speaker similarity (paper Table 2 SS): cosine to the target voice", [("tts.ss", "SS", 1)]),
    ("Pitch fidelity (paper Table 9): normalised contour vs the reference speech",
     [("tts.pitch_mse", "MSE", 1), ("tts.pitch_dtw", "DTW", 1)]),
    ("Ablation (paper Table 11): with and without the speaker embedding",
     [("tts.wer", "WER % with speaker", 100), ("ablation.wer", "WER % speaker zeroed", 100),
      ("tts.ss", "SS with speaker", 1), ("ablation.ss", "SS speaker zeroed", 1)]),
    ("Speech QA: short answers", [("qa.exact", "exact match %", 100), ("qa.contains", "contains answer %", 100)]),
    ("Speed: generation", [("tts.rtf", "real-time factor", 1), ("tts.first_frame_s", "first audio frame (s)", 1)]),
    ("Skipped samples", [(f"{p}.skipped", f"{p} skipped", 1) for p in ("asr", "qa", "tts", "ablation")]),
]  # fmt: skip


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


def figures(rows: list[dict]) -> dict[str, float]:
    """Corpus figures per pass: WER = summed errors / summed reference units (as torchmetrics
    accumulates), means of SS / pitch / QA scores, RTF = generation time / speech duration."""
    out: dict[str, float] = {}
    for name in sorted({r["pass"] for r in rows}):
        mine = [r for r in rows if r["pass"] == name]
        ok = [r for r in mine if "skipped" not in r]
        out[f"{name}.samples"], out[f"{name}.skipped"] = len(ok), len(mine) - len(ok)
        units = sum(r.get("units", 0) for r in ok)
        if units:
            out[f"{name}.wer"] = sum(r["errors"] for r in ok) / units
        for field, key in (("ss", "ss"), ("pitch_mse", "pitch_mse"), ("pitch_dtw", "pitch_dtw"),
                           ("exact", "exact"), ("contains", "contains"), ("first_frame_seconds", "first_frame_s")):  # fmt: skip
            value = _mean([float(r[field]) for r in ok if r.get(field) is not None])
            if value is not None:
                out[f"{name}.{key}"] = value
        audio = sum(r.get("audio_seconds", 0.0) for r in ok)
        if audio:
            out[f"{name}.rtf"] = sum(r["gen_seconds"] for r in ok) / audio
    return out


def _cell(value, scale) -> str:
    return "-" if value is None else f"{value * scale:.2f}" if scale != 1 or isinstance(value, float) else str(value)


def markdown(by_checkpoint: dict[str, dict[str, dict[str, float]]]) -> str:
    """``{checkpoint label: {set: figures}}`` -> one markdown table per task (tables with no figure
    left out); a Δ column (last - first) with two or more checkpoints."""
    labels = list(by_checkpoint)
    sets = sorted({s for per_set in by_checkpoint.values() for s in per_set})
    head = ["set", "metric", *labels] + (["Δ (last - first)"] if len(labels) > 1 else [])
    parts = []
    for title, metrics in TABLES:
        lines = []
        for set_name in sets:
            for key, label, scale in metrics:
                values = [by_checkpoint[c].get(set_name, {}).get(key) for c in labels]
                if all(v is None for v in values):
                    continue
                cells = [_cell(v, scale) for v in values]
                if len(labels) > 1:
                    first, last = values[0], values[-1]
                    cells.append("-" if first is None or last is None else f"{(last - first) * scale:+.2f}")
                lines.append("| " + " | ".join([set_name, label, *cells]) + " |")
        if lines:
            rule = "|" + "|".join("---" for _ in head) + "|"
            parts.append(f"### {title}\n\n| " + " | ".join(head) + f" |\n{rule}\n" + "\n".join(lines))
    return "\n\n".join(parts) + "\n"


def write_report(out_dir: Path, by_checkpoint: dict, skipped_rows: dict[str, list[str]], checkpoints: dict) -> str:
    """``report.md`` (tables + skipped manifest rows), ``figures.json`` and TensorBoard scalars
    ``eval/<set>/<figure>`` under ``tb/<checkpoint label>``. Returns the markdown."""
    from torch.utils.tensorboard import SummaryWriter

    text = "# Evaluation\n\n" + "".join(f"- `{label}`: {path}\n" for label, path in checkpoints.items())
    text += "\n" + markdown(by_checkpoint)
    bad = [line for lines in skipped_rows.values() for line in lines]
    if bad:
        text += f"\n### Manifest rows skipped while reading ({len(bad)})\n\n" + "".join(f"- {b}\n" for b in bad)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.md").write_text(text)
    payload = {"checkpoints": checkpoints, "figures": by_checkpoint,
               "rows_skipped_reading": {s: len(v) for s, v in skipped_rows.items()}}  # fmt: skip
    (out_dir / "figures.json").write_text(json.dumps(payload, indent=2))
    for label, per_set in by_checkpoint.items():
        with SummaryWriter(str(out_dir / "tb" / label)) as writer:
            for set_name, figs in per_set.items():
                for key, value in figs.items():
                    writer.add_scalar(f"eval/{set_name}/{key}", value, 0)
                _add_audio(writer, out_dir / label / set_name, set_name)
    return text


def _add_audio(writer, wav_dir: Path, set_name: str, per_pass: int = 4) -> None:
    """The first few decoded replies of each speech pass, to listen to beside the figures."""
    import soundfile as sf

    for wav_path in sorted(p for d in sorted(wav_dir.glob("*")) if d.is_dir() for p in sorted(d.glob("*.wav"))[:per_pass]):
        wav, rate = sf.read(wav_path, dtype="float32")
        writer.add_audio(f"eval/{set_name}/{wav_path.parent.name}/{wav_path.stem}", wav, 0, sample_rate=rate)
