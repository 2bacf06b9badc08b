"""Look at shards: ``qinyu-lit data inspect`` prints samples, ``qinyu-lit data validate`` checks them.

``inspect`` shows what a sample holds (task, prompts, turns with durations, code shapes and
the first frames, speaker vectors) and the interleaved token layout exactly as the model
trains on it (``TokenLayout.describe``: ``*`` marks supervised positions, ``[c0 .. c7]`` a
delayed audio frame with ``_`` for a delay pad).

``validate`` decodes every sample with the schema validator (``decode_sample``) and checks
the folder's ``index.json`` against what the shards really hold.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from ..data.index import INDEX_FORMAT, INDEX_NAME, path_from_index, read_index
from ..data.mixture import expand_shards
from ..data.schema import Sample, SampleError, decode_sample
from ..data.tar import iter_raw_samples
from .build import build


def inspect(
    shard: str,
    samples: int = 3,
    key: str | None = None,
    tokenizer: str | None = None,
    pattern: list[int] = [1, 8, 4, 8],  # noqa: B006 - jsonargparse shows list defaults in --help
    audio_front_end: str = "fbank_lfr",
    frames: int = 4,
    max_layout: int = 160,
) -> None:
    """Print samples of a shard readably, with their token layout.

    Args:
        shard: a ``.tar`` shard.
        samples: how many samples to print (from the start of the shard).
        key: print only the sample with this key.
        tokenizer: tokenizer for the layout; default: the one named in the folder's
            ``index.json``; without one the layout is not shown.
        pattern: interleave blocks ``[n_text, m_audio, ...]`` (as ``data.pattern``).
        audio_front_end: ``fbank_lfr`` or ``whisper`` (decides the ``<|audio|>`` count).
        frames: first code frames shown per assistant turn.
        max_layout: layout entries shown per sample (the rest is counted).
    """
    layouts = _Layouts(tokenizer or _index_tokenizer(Path(shard).parent), pattern, audio_front_end)
    shown = 0
    for raw in iter_raw_samples([shard]):
        if key is not None and raw["__key__"] != key:
            continue
        sample = decode_sample(raw, shard)
        print("\n".join(describe_sample(sample, frames)))
        layout = layouts.describe(sample, max_layout)
        if layout:
            print(layout)
        print()
        shown += 1
        if shown >= samples and key is None:
            break
    if key is not None and not shown:
        raise SystemExit(f"{shard}: no sample with key {key!r}")


def describe_sample(sample: Sample, frames: int = 4) -> list[str]:
    """What a sample holds, one line per item."""
    c = sample.codec
    lines = [
        f"== {sample.key}  task={sample.task}  language={sample.language}  "
        f"codec={c.name} {c.num_codebooks}x{c.codebook_size} @ {c.frame_rate:g} Hz ({c.sample_rate} Hz audio)"
    ]
    if sample.system:
        lines.append(f"system: {sample.system!r}")
    if sample.agent_speaker is not None:
        lines.append(f"agent speaker: {_vector(sample.agent_speaker)}")
    for i, t in enumerate(sample.turns):
        lines += _turn_lines(f"turn {i} {t.role}", t, c.frame_rate, frames)
    if sample.rejected is not None:  # a preference pair (DPO): the reply that loses to the last turn
        lines += _turn_lines(f"rejected reply (preference {sample.preference!r})", sample.rejected, c.frame_rate, frames)
    if sample.meta:
        lines.append(f"meta: {json.dumps(sample.meta, ensure_ascii=False)}")
    return lines


def _turn_lines(label: str, t, frame_rate: float, frames: int) -> list[str]:
    parts = [f"text {t.text!r}" if t.text else "no text"]
    if t.audio is not None:
        parts.append(f"speech {len(t.audio) / t.sample_rate:.2f} s @ {t.sample_rate} Hz")
    if t.codes is not None:
        parts.append(f"codes {list(t.codes.shape)} = {t.codes.shape[1] / frame_rate:.2f} s")
    if t.speaker is not None:
        parts.append(f"speaker {_vector(t.speaker)}")
    lines = [f"{label}: " + "; ".join(parts)]
    if t.codes is not None:
        lines += [f"    frame {f}: " + " ".join(str(int(x)) for x in t.codes[:, f]) for f in range(min(frames, t.codes.shape[1]))]
    return lines


def _vector(v: np.ndarray) -> str:
    head = " ".join(f"{x:.3g}" for x in v[:4])
    return f"[{v.shape[0]}] {head} ... (norm {np.linalg.norm(v):.3g})"


class _Layouts:
    """TokenLayouts keyed by codec shape, so inspect never trips the training-time codec check."""

    def __init__(self, tokenizer: str | None, pattern, audio_front_end: str):
        self.tokenizer_name, self.pattern, self.front_end_name = tokenizer, list(pattern), audio_front_end
        self._tokenizer, self._cache = None, {}

    def get(self, sample: Sample):
        from ..data.features import FRONT_ENDS
        from ..data.layout import TokenLayout
        from ..data.tokenizer import load_tokenizer

        shape = (sample.codec.num_codebooks, sample.codec.codebook_size)
        if shape not in self._cache:
            self._tokenizer = self._tokenizer or load_tokenizer(self.tokenizer_name)
            self._cache[shape] = TokenLayout(
                self._tokenizer, self.pattern, *shape, front_end=FRONT_ENDS[self.front_end_name]()
            )
        return self._cache[shape]

    def describe(self, sample: Sample, limit: int) -> str:
        if self.tokenizer_name is None:
            return "layout: (pass --tokenizer to see the token layout)"
        try:
            layout = self.get(sample)
        except OSError as e:  # the index names a tokenizer this machine cannot load
            return f"layout: tokenizer {self.tokenizer_name!r} not loadable ({e}); pass --tokenizer"
        seq = layout.build(sample)
        items = layout.describe(seq)
        more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
        head = f"layout: {len(seq)} positions, {seq.num_targets} supervised (*), {len(seq.speakers)} speaker slots"
        return "\n".join([head] + _wrap(items[:limit] + ([more.strip()] if more else []), width=110))


def _wrap(items: list[str], width: int) -> list[str]:
    """Lines of whole items (a frame ``[c0 .. c7]`` is never split across lines)."""
    lines, line = [], ""
    for item in items:
        if line and len(line) + 1 + len(item) > width:
            lines.append(line)
            line = ""
        line = f"{line} {item}" if line else f"  {item}"
    return lines + ([line] if line else [])


def _index_tokenizer(folder: Path) -> str | None:
    index = read_index(folder) or {}
    return path_from_index(index.get("tokenizer"), folder)  # stored relative to the index's folder


# --------------------------------------------------------------------------- validate


def validate(path: str, tokenizer: str | None = None, max_errors: int = 20) -> None:
    """Check every sample of a shard set and its ``index.json``; exits with status 1 on problems.

    Args:
        path: a shard folder (with ``index.json``), or a shard glob / brace pattern / file.
        tokenizer: also check the text-token counts of the index with this tokenizer.
        max_errors: sample errors listed before the rest are only counted.
    """
    problems = check_shards(path, tokenizer=tokenizer, max_errors=max_errors)
    if problems:
        print("\n".join(f"PROBLEM {p}" for p in problems))
        raise SystemExit(1)


def check_shards(path: str, tokenizer: str | None = None, max_errors: int = 20) -> list[str]:
    """``validate`` without the exit: prints a summary, returns the problems found."""
    folder = Path(path) if Path(path).is_dir() else None
    shards = expand_shards(path)
    problems: list[str] = []
    errors = 0
    tok = None
    if tokenizer:
        from ..data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)
    seen: dict[str, dict] = {}
    codecs: Counter = Counter()
    across = _AcrossSamples()
    for shard in shards:
        stats = seen[Path(shard).name] = dict(samples=0, audio_seconds=0.0, text_tokens=0, code_frames=0)
        try:
            for raw in iter_raw_samples([shard]):
                try:
                    sample = decode_sample(raw, shard)
                except SampleError as e:
                    errors += 1
                    if errors <= max_errors:
                        problems.append(str(e))
                    continue
                stats["samples"] += 1
                codecs[json.dumps(sample.codec.__dict__, sort_keys=True)] += 1
                across.add(sample, shard)
                frames = sum(t.codes.shape[1] for t in sample.turns if t.codes is not None)
                stats["code_frames"] += frames
                user = sum(len(t.audio) / t.sample_rate for t in sample.turns if t.audio is not None)
                stats["audio_seconds"] += user + frames / sample.codec.frame_rate
                if tok is not None:
                    texts = [sample.system] + [t.text for t in sample.turns]
                    stats["text_tokens"] += sum(
                        len(tok(x, add_special_tokens=False)["input_ids"]) for x in texts if x
                    )
        except Exception as e:  # a truncated or corrupt tar
            problems.append(f"{shard}: unreadable shard ({type(e).__name__}: {e})")
    if errors > max_errors:
        problems.append(f"... and {errors - max_errors} more sample errors")
    if len(codecs) > 1:
        problems.append(f"samples use {len(codecs)} different codecs: {sorted(codecs)}")
    problems += across.problems(_index_or_none(folder))
    if folder is not None:
        problems += _check_index(folder, seen, codecs, check_tokens=tok is not None)
        partial = sorted(p.name for p in folder.glob("*.partial"))
        if partial:
            problems.append(
                f"{folder}: unfinished files {partial} - an interrupted build; run the same build command again"
            )
    total = sum(s["samples"] for s in seen.values())
    seconds = sum(s["audio_seconds"] for s in seen.values())
    print(
        f"{path}: {len(shards)} shards, {total} samples, {seconds:.1f} s of audio checked; {len(problems)} problems"
    )
    return problems


def _index_or_none(folder: Path | None) -> dict | None:
    try:
        return read_index(folder) if folder is not None else None
    except ValueError:  # not JSON: reported by _check_index
        return None


class _AcrossSamples:
    """What training needs to hold across samples (each sample alone passed ``decode_sample``):
    one speaker-vector size (the batch stacks them; the model has one ``net.speaker_dim``) and one
    codebook count x size, equal to the index's codec. Remembers the first sample of each value."""

    def __init__(self):
        self.speaker_dims: dict[int, str] = {}
        self.code_shapes: dict[tuple[int, int], str] = {}

    def add(self, sample: Sample, shard: str) -> None:
        where = f"{shard}: sample {sample.key!r}"
        for v in [sample.agent_speaker] + [t.speaker for t in sample.turns]:
            if v is not None:
                self.speaker_dims.setdefault(int(v.shape[0]), where)
        self.code_shapes.setdefault((sample.codec.num_codebooks, sample.codec.codebook_size), where)

    def problems(self, index: dict | None) -> list[str]:
        out = []
        if len(self.speaker_dims) > 1:
            first = ", ".join(f"{d} (first: {w})" for d, w in sorted(self.speaker_dims.items()))
            out.append(f"speaker vectors of different sizes: {first}; training needs one size (net.speaker_dim)")
        if len(self.code_shapes) > 1:
            first = ", ".join(f"{c} x {s} (first: {w})" for (c, s), w in sorted(self.code_shapes.items()))
            out.append(f"samples hold codes of different codebook count x size: {first}; a model reads one")
        codec = (index or {}).get("codec") or {}
        want = (codec.get("num_codebooks"), codec.get("codebook_size"))
        for shape, where in sorted(self.code_shapes.items()):
            if codec and shape != want:
                out.append(f"{where}: codes are {shape[0]} x {shape[1]} but index.json says {want[0]} x {want[1]}")
        dims = (index or {}).get("speaker_dims")
        if dims is not None and sorted(self.speaker_dims) != sorted(dims):
            out.append(f"index.json speaker_dims={dims} but the samples hold sizes {sorted(self.speaker_dims)}")
        return out


def _check_index(folder: Path, seen: dict, codecs: Counter, check_tokens: bool) -> list[str]:
    path = folder / INDEX_NAME
    try:
        index = read_index(folder)
    except ValueError as e:  # not JSON: read_index says so, with the file
        return [str(e)]
    if index is None:
        # shards written by hand have no index; an interrupted `data build` is caught by its
        # leftover .partial files below
        print(f"note: {path} not found - per-shard counts not checked (every qinyu-lit writer records one)")
        return []
    if index.get("format") != INDEX_FORMAT:
        return [f"{path}: format {index.get('format')!r}, expected {INDEX_FORMAT!r}"]
    problems = []
    listed = {e["path"]: e for e in index.get("shards", [])}
    for name in sorted(set(seen) - set(listed)):
        problems.append(f"{path}: shard {name} is on disk but not in the index")
    for name in sorted(set(listed) - set(seen)):
        problems.append(f"{path}: shard {name} is in the index but missing on disk")
    fields = ["samples", "code_frames"] + (["text_tokens"] if check_tokens else [])
    for name in sorted(set(listed) & set(seen)):
        entry, real = listed[name], seen[name]
        for f in fields:
            if entry.get(f) != real[f]:
                problems.append(
                    f"{path}: shard {name}: index says {f}={entry.get(f)}, the shard holds {real[f]}"
                )
        if abs(entry.get("audio_seconds", -1) - real["audio_seconds"]) > 0.01:
            problems.append(
                f"{path}: shard {name}: index says audio_seconds={entry.get('audio_seconds')}, "
                f"the shard holds {real['audio_seconds']:.3f}"
            )
    if len(codecs) == 1 and json.loads(next(iter(codecs))) != index.get("codec"):
        problems.append(
            f"{path}: index codec {index.get('codec')} differs from the samples' {next(iter(codecs))}"
        )
    total = sum(e.get("samples", 0) for e in listed.values())
    if index.get("totals", {}).get("samples") != total:
        problems.append(
            f"{path}: totals.samples={index.get('totals', {}).get('samples')} but the shards list {total}"
        )
    return problems


# the ``qinyu-lit data`` sub-commands (run by jsonargparse from ``qinyu_lit.cli``)
data_main = {"build": build, "inspect": inspect, "validate": validate}
