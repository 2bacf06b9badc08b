"""One shard from manifest rows: read and resample the audio, codec codes in batches, speaker vectors,
the validated ``Sample``s, ``write_shard``. ``build.py`` plans the shards and runs builders in workers."""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.audio import AudioError, read_audio
from ..data.features import resample
from ..data.files import atomic_write_text
from ..data.schema import Sample, Turn
from .manifest import BadRow, BadRowError, ManifestRow
from .speakers import load_embedding
from .writer import write_shard


@dataclass
class BuildOptions:
    """Everything a worker needs to turn rows into a shard (picklable: sent to worker processes)."""

    manifest: str
    tokenizer: str
    codec: str | dict
    codec_class: str
    num_quantizers: int
    speaker_encoder: str | dict | None
    user_speakers: bool
    user_sample_rate: int
    codec_batch_size: int
    device: str
    seed: int
    strict: bool
    threads: int | None

    def fingerprint(self) -> dict:
        """The options that change the bytes written (not where or how fast they are computed)."""
        skip = {"manifest", "device", "strict", "threads"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


def sidecar(state: Path, shard: Path) -> Path:
    return state / (shard.name + ".json")


REJECTED = -1  # the turn number of a preference pair's rejected reply, in the per-row audio and codes


def numbered_turns(row: ManifestRow):
    """(turn number, turn) of the row's turns, then ``(REJECTED, rejected reply)`` for a preference pair."""
    yield from enumerate(row.turns)
    if row.rejected is not None:
        yield REJECTED, row.rejected


class _RowFailure(Exception):
    def __init__(self, kind: str, reason: str):
        self.kind, self.reason = kind, reason




class ShardBuilder:
    """Turns manifest rows into ``Sample``s and writes them as one shard (codec, speaker
    encoder and tokenizer are loaded once per process)."""

    def __init__(self, options: BuildOptions):
        from ..data.tokenizer import load_tokenizer
        from .codecs import load_codec, resolve_codec_class

        self.options = options
        self.codec = load_codec(
            resolve_codec_class(options.codec_class, options.codec),
            model=options.codec,
            num_quantizers=options.num_quantizers,
            device=options.device,
            seed=options.seed,
        )
        self.speaker_encoder = speaker_encoder(options)
        self.tokenizer = load_tokenizer(options.tokenizer)
        self._warned_constant = False

    def build_shard(self, rows: list[ManifestRow], path: Path, voices: dict[str, np.ndarray]) -> dict:
        """Build and write one shard; returns its index entry (bad rows under ``skipped``)."""
        opts = self.options
        loaded, skipped = [], []
        for row in rows:
            try:
                loaded.append((row, self._load(row)))
            except _RowFailure as e:
                bad = BadRow(opts.manifest, row.line, row.key, e.kind, e.reason)
                if opts.strict:
                    raise BadRowError(bad) from None
                skipped.append(bad)
        codes = self._encode_assistant_audio(loaded)
        self._warn_constant(codes, path)
        samples = []
        for row, audio in loaded:
            try:
                samples.append(self._sample(row, audio, codes, voices))
            except _RowFailure as e:
                bad = BadRow(opts.manifest, row.line, row.key, e.kind, e.reason)
                if opts.strict:
                    raise BadRowError(bad) from None
                skipped.append(bad)
        stats = self._stats(path, samples, skipped)
        # the sidecar goes first: a shard under its final name always has its statistics
        atomic_write_text(sidecar(path.parent / ".build", path), json.dumps(stats, indent=1))
        write_shard(samples, path, index=False)  # the whole index.json is written at the end (_write_index)
        return stats

    def _load(self, row: ManifestRow) -> dict[int, tuple[np.ndarray, int]]:
        """Decode every audio file of a row: turn index -> (mono float32, sample rate)."""
        audio = {}
        for i, turn in numbered_turns(row):
            if turn.audio is None:
                continue
            where = "rejected" if i == REJECTED else f"turns[{i}]"
            try:
                wav, sr = read_audio(turn.audio, where=f"{where}.audio: {turn.audio}")
            except AudioError as e:
                raise _RowFailure("unreadable_audio", str(e)) from None
            audio[i] = (wav, int(sr))
        return audio

    def _encode_assistant_audio(self, loaded) -> dict[tuple[str, int], np.ndarray]:
        """Codes of every assistant clip of the shard, ``codec_batch_size`` clips per call.

        Clips are sorted by length (less padding per batch); the order depends only on the
        shard's rows, so the same shard always sees the same batches."""
        clips = []
        for row, audio in loaded:
            for i, turn in numbered_turns(row):
                if turn.role == "assistant" and i in audio:
                    wav, sr = audio[i]
                    clips.append(((row.key, i), resample(wav, sr, self.codec.sample_rate)))
        clips.sort(key=lambda c: len(c[1]))
        codes = {}
        step = max(1, self.options.codec_batch_size)
        for b in range(0, len(clips), step):
            batch = clips[b : b + step]
            for (ref, _), c in zip(batch, self.codec.encode([w for _, w in batch]), strict=True):
                codes[ref] = c
        return codes

    def _warn_constant(self, codes: dict, path: Path) -> None:
        from .codecs import constant_codes

        if not self._warned_constant and constant_codes(list(codes.values())):
            self._warned_constant = True  # once per process: the codec, not the shard, is the problem
            tqdm.write(
                f"warning: {path.name}: codec {self.codec.name!r} emitted one constant code per codebook for every "
                "clip - the codes carry no audio (an untrained codec?); use pretrained weights (--codec kyutai/mimi) "
                "or the offline --codec tiny-mimi for trying the pipeline",
                file=sys.stderr,
            )

    def _sample(self, row: ManifestRow, audio, codes, voices) -> Sample:
        opts = self.options
        turns = []
        for i, t in enumerate(row.turns):
            turn = Turn(role=t.role, text=t.text)
            if t.speaker is not None:
                turn.speaker = _embedding(t.speaker, f"turns[{i}].speaker")
            if t.role == "user" and i in audio:
                wav, sr = audio[i]
                turn.audio, turn.sample_rate = resample(wav, sr, opts.user_sample_rate), opts.user_sample_rate
                if turn.speaker is None and self.speaker_encoder is not None and opts.user_speakers:
                    turn.speaker = _finite(
                        self.speaker_encoder.embed(wav, sr), f"turns[{i}]: the speaker encoder's output"
                    )
            if t.role == "assistant" and i in audio:
                turn.codes = codes[(row.key, i)]
            turns.append(turn)
        agent = None
        if row.agent_speaker is not None:
            agent = _embedding(row.agent_speaker, "agent_speaker")
        elif row.agent_voice is not None:
            agent = voices[row.agent_voice]
        dims = {v.shape[0] for v in [agent] + [t.speaker for t in turns] if v is not None}
        if len(dims) > 1:
            raise _RowFailure(
                "bad_embedding",
                f"speaker embeddings of one sample must share a dimension, got {sorted(dims)}",
            )
        meta = dict(row.meta, manifest_line=row.line)
        rejected = None
        if row.rejected is not None:  # a preference pair's losing reply: text and (optional) speech codes
            rejected = Turn("assistant", row.rejected.text, codes=codes.get((row.key, REJECTED)))
        return Sample(row.key, row.task, turns, self.codec.info, row.language, row.system, agent, meta=meta,
                      rejected=rejected, preference=row.preference)  # fmt: skip

    def _stats(self, path: Path, samples: list[Sample], skipped: list[BadRow]) -> dict:
        def tokens(text: str) -> int:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

        audio = sum(len(t.audio) / t.sample_rate for s in samples for t in s.turns if t.audio is not None)
        frames = sum(t.codes.shape[1] for s in samples for t in s.turns + [s.rejected] if t is not None and t.codes is not None)
        return {
            "path": path.name,  # relative to the index's folder
            "samples": len(samples),
            "audio_seconds": round(audio + frames / self.codec.frame_rate, 3),
            "text_tokens": sum(tokens(s.system) + sum(tokens(t.text) for t in s.turns) for s in samples),
            "code_frames": frames,
            "tasks": dict(sorted(Counter(s.task for s in samples).items())),
            "speaker_dims": sorted(
                {
                    v.shape[0]
                    for s in samples
                    for v in [s.agent_speaker] + [t.speaker for t in s.turns]
                    if v is not None
                }
            ),
            "codec": self.codec.info.__dict__,
            "skipped": [b.to_dict() for b in skipped],
        }


def _embedding(path: str, where: str) -> np.ndarray:
    try:
        return load_embedding(path)
    except ValueError as e:
        raise _RowFailure("bad_embedding", f"{where}: {e}") from None


def _finite(vec: np.ndarray, where: str) -> np.ndarray:
    if not np.isfinite(vec).all():
        raise _RowFailure("bad_embedding", f"{where} contains NaN or inf")
    return vec.astype(np.float32)


def speaker_encoder(options: BuildOptions):
    if options.speaker_encoder is None:
        return None
    from .speakers import WavLMSpeakerEncoder

    return WavLMSpeakerEncoder(options.speaker_encoder, device=options.device, seed=options.seed)
