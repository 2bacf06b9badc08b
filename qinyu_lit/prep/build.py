"""Manifest -> shards: audio files and transcripts in, schema-v1 WebDataset shards out.

    manifest.jsonl --scan_manifest--> good rows + bad rows (line, reason)
                   --voices-------->  agent voice vectors (mean of up to N clips), out/voices/<id>.npy
                   --plan---------->  rows split into shards of ``samples_per_shard`` in manifest order
                   --workers------->  per shard: read + mono + resample (soxr), codec codes in
                                      batches, speaker embeddings, ``write_shard`` (atomic)
                   --index--------->  out/index.json (per shard: samples, audio seconds, text
                                      tokens, code frames), out/skipped.jsonl

Resumable: a shard whose file exists is finished (``write_shard`` renames a complete
``.partial`` file into place) and is not rebuilt; its statistics come from the sidecar
written just before it (``out/.build/``). The split into shards and every batch a codec sees
are a function of the manifest and the options alone, so a resumed build writes the same
bytes as an uninterrupted one (run with the same torch thread count and device, which decide
the order of floating-point sums). A build of another manifest or with other options into the
same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.audio import AudioError, read_audio
from ..data.features import resample
from ..data.files import atomic_path, atomic_write_text
from ..data.index import INDEX_FORMAT, path_for_index
from ..data.schema import SCHEMA_VERSION, Sample, Turn
from .manifest import BAD_ROW_KINDS, BadRow, BadRowError, ManifestRow, scan_manifest
from .speakers import load_embedding, voice_embedding
from .writer import shard_name, write_shard


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


@dataclass
class BuildReport:
    """What ``build`` did; also summarised on stdout."""

    out: str
    shards: list[str]
    built: int
    resumed: int
    samples: int
    audio_seconds: float
    text_tokens: int
    code_frames: int
    seconds: float
    skipped: list[BadRow] = field(default_factory=list)

    @property
    def skipped_counts(self) -> dict[str, int]:
        return dict(Counter(b.kind for b in self.skipped))


class _RowFailure(Exception):
    def __init__(self, kind: str, reason: str):
        self.kind, self.reason = kind, reason


# --------------------------------------------------------------------------- entry point


def build(
    *,
    manifest: str,
    out: str,
    tokenizer: str = "Qwen/Qwen3-8B",
    codec: str | dict | None = None,
    codec_class: str = "auto",
    num_quantizers: int = 8,
    speaker_encoder: str | dict | None = None,
    user_speakers: bool = True,
    voice_clips: int = 100,
    user_sample_rate: int = 16000,
    max_audio_seconds: float = 60.0,
    samples_per_shard: int = 1000,
    codec_batch_size: int = 16,
    workers: int = 0,
    threads: int | None = None,
    device: str = "cpu",
    seed: int = 0,
    strict: bool = False,
    progress: bool = True,
) -> BuildReport:
    """Build shards from a JSONL manifest (format: ``data_cards/SCHEMA.md``, "Manifest format").

    Args:
        manifest: the JSONL manifest; relative paths in it are relative to its folder.
        out: output folder: ``shard-NNNNNN.tar``, ``index.json``, ``skipped.jsonl``, ``voices/``.
        tokenizer: tokenizer name or folder, used to count text tokens for the index.
        codec: the XY-Tokenizer checkpoint folder (the default codec: 8 x 1024 at 12.5 Hz, what the
            recipes assume; docs/data.md) or a dict ``{checkpoint, source, module}`` naming your
            install; or a Mimi: ``kyutai/mimi`` (8 x 2048: set ``data.codebook_size 2048``) or a
            dict of ``MimiConfig`` fields for a randomly initialised one (tests, demos).
        codec_class: import path of an ``AudioCodec`` subclass; it is called with ``model``,
            ``num_quantizers``, ``device`` and ``seed``. ``auto``: ``XYTokenizerCodec``, or
            ``MimiCodec`` when ``codec`` names a Mimi.
        num_quantizers: codebooks per frame (8 in the paper; must match ``data.num_codebooks``).
        speaker_encoder: ``WavLMForXVector`` name (``microsoft/wavlm-base-plus-sv``) or a dict of
            ``WavLMConfig`` fields; ``None`` takes speaker vectors only from ``.npy`` files.
        user_speakers: with a speaker encoder, embed each user turn's audio that has no ``.npy``.
        voice_clips: an ``agent_voice`` is the mean embedding of up to this many of its clips
            (the assistant audio of rows naming it, in manifest order; the paper uses 100).
        user_sample_rate: user speech is stored at this rate (the audio encoders read 16 kHz).
        max_audio_seconds: rows with a longer audio file are skipped as ``too_long``.
        samples_per_shard: rows per shard (fewer where rows are skipped while building).
        codec_batch_size: assistant clips per codec call (sorted by length within a shard).
        workers: worker processes, one shard each at a time; 0 builds in this process. (From a
            script of your own, call ``build`` under ``if __name__ == "__main__":``: workers
            are spawned and re-import the main module.)
        threads: torch threads per worker (default: CPU cores / workers).
        device: where the codec and speaker encoder run: ``cpu``, ``cuda``, ``cuda:N``.
        seed: seed of randomly initialised codec / speaker-encoder weights.
        strict: stop at the first bad row instead of skipping it (shards already written stay).
        progress: show a progress bar (audio seconds done / planned).
    """
    start = time.perf_counter()
    out_dir = Path(out)
    state = out_dir / ".build"
    fresh = not state.exists()  # this call starts the build (it does not resume one)
    state.mkdir(parents=True, exist_ok=True)
    try:
        options = BuildOptions(
            manifest=str(manifest),
            tokenizer=str(tokenizer),
            codec=codec,
            codec_class=codec_class,
            num_quantizers=num_quantizers,
            speaker_encoder=speaker_encoder,
            user_speakers=user_speakers,
            user_sample_rate=user_sample_rate,
            codec_batch_size=codec_batch_size,
            device=device,
            seed=seed,
            strict=strict,
            threads=threads,
        )
        _claim(out_dir, options, manifest, max_audio_seconds, samples_per_shard, voice_clips, workers)

        scan = scan_manifest(manifest, max_audio_seconds=max_audio_seconds, strict=strict)
        skipped: list[BadRow] = list(scan.bad)
        for bad in scan.bad:
            tqdm.write(f"skipped {bad}", file=sys.stderr)
        voices, voice_bad = _resolve_voices(scan.rows, options, out_dir, voice_clips)
        for bad in voice_bad:
            tqdm.write(f"skipped {bad}", file=sys.stderr)
        skipped += voice_bad
        bad_lines = {b.line for b in voice_bad}
        rows = [r for r in scan.rows if r.line not in bad_lines]

        plan = [rows[i : i + samples_per_shard] for i in range(0, len(rows), samples_per_shard)]
        paths = [out_dir / shard_name(i) for i in range(len(plan))]
        done = {i for i, p in enumerate(paths) if p.exists() and _sidecar(state, p).exists()}
        todo = [i for i in range(len(plan)) if i not in done]
        stats = {i: json.loads(_sidecar(state, paths[i]).read_text()) for i in done}

        bar = tqdm(
            total=round(sum(r.audio_seconds for i in todo for r in plan[i]), 1),
            unit="audio-s",
            desc=f"building {len(todo)} of {len(plan)} shards",
            disable=not progress,
        )

        def finished(i: int, shard_stats: dict) -> None:
            stats[i] = shard_stats
            for b in shard_stats["skipped"]:
                tqdm.write(f"skipped {BadRow(**b)}", file=sys.stderr)
            bar.update(round(sum(r.audio_seconds for r in plan[i]), 1))

        try:
            if workers <= 0:
                with _torch_threads(threads):
                    builder = ShardBuilder(options)
                    for i in todo:
                        finished(i, builder.build_shard(plan[i], paths[i], voices))
            else:
                _run_pool(workers, options, [(i, plan[i], paths[i], voices) for i in todo], finished)
        finally:
            bar.close()

        entries = [stats[i] for i in range(len(plan))]
        skipped += [BadRow(**b) for s in entries for b in s["skipped"]]
        skipped.sort(key=lambda b: b.line)
        _write_index(out_dir, options, entries, skipped)
        report = BuildReport(
            out=str(out_dir),
            shards=[str(p) for p in paths],
            built=len(todo),
            resumed=len(done),
            samples=sum(s["samples"] for s in entries),
            audio_seconds=sum(s["audio_seconds"] for s in entries),
            text_tokens=sum(s["text_tokens"] for s in entries),
            code_frames=sum(s["code_frames"] for s in entries),
            seconds=time.perf_counter() - start,
            skipped=skipped,
        )
        _print_summary(report)
        return report
    except BaseException:
        if fresh:
            _release(out_dir)
        raise


def _release(out_dir: Path) -> None:
    """After a failed first attempt that wrote no shard: drop the build record and the voices this
    attempt computed, so a retry with other options (another codec, a local tokenizer, another
    speaker encoder) is not refused as a different build and reuses nothing stale."""
    import shutil

    if any(out_dir.glob("shard-*.tar")):
        return  # shards were written: keep the record, a resume must use the same options
    shutil.rmtree(out_dir / ".build", ignore_errors=True)
    shutil.rmtree(out_dir / "voices", ignore_errors=True)
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()


def _claim(
    out_dir: Path, options: BuildOptions, manifest, max_audio_seconds, samples_per_shard, voice_clips, workers
) -> None:
    """Record what this folder is a build of; refuse to resume a build of something else.

    The torch thread count and the device are recorded too: they change the order of
    floating-point sums, so speaker vectors (and, rarely, codes) may differ in their last bits.
    A resume with other values is allowed (the shards are equally valid) but warned about,
    because it is no longer byte-identical to an uninterrupted build."""
    import torch

    plan = dict(
        options.fingerprint(),
        manifest_sha256=hashlib.sha256(Path(manifest).read_bytes()).hexdigest(),
        max_audio_seconds=max_audio_seconds,
        samples_per_shard=samples_per_shard,
        voice_clips=voice_clips,
    )
    plan = json.loads(json.dumps(plan, sort_keys=True))  # tuples -> lists, as they come back from the file
    threads = options.threads or (
        max(1, (os.cpu_count() or 1) // workers) if workers > 0 else torch.get_num_threads()
    )
    numerics = {"threads": threads, "device": options.device}
    path, numerics_path = out_dir / ".build" / "plan.json", out_dir / ".build" / "numerics.json"
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(plan) if before.get(k) != plan.get(k))
        if changed:
            raise ValueError(
                f"{out_dir} holds a build of another manifest or other options (changed: {', '.join(changed)}); "
                "resuming would mix them - build into a new --out folder or delete this one"
            )
        if numerics_path.exists() and (was := json.loads(numerics_path.read_text())) != numerics:
            tqdm.write(
                f"note: {out_dir} was started with {was} and resumes with {numerics}; new shards are valid but "
                "float results (speaker vectors) may differ in their last bits from an uninterrupted build",
                file=sys.stderr,
            )
    else:
        atomic_write_text(path, json.dumps(plan, indent=1, sort_keys=True))
        atomic_write_text(numerics_path, json.dumps(numerics))


def _sidecar(state: Path, shard: Path) -> Path:
    return state / (shard.name + ".json")


def _run_pool(workers: int, options: BuildOptions, jobs: list, finished) -> None:
    # spawn, not fork: torch and tokenizers hold threads that a fork would copy in a broken state
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(options, workers)
    ) as pool:
        pending = {pool.submit(_worker_build, *job): job[0] for job in jobs}
        while pending:
            complete, _ = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in complete:
                i = pending.pop(fut)
                if fut.exception() is not None:
                    # shards already renamed into place stay; the others are never started
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise fut.exception()
                finished(i, fut.result())


@contextmanager
def _torch_threads(threads: int | None):
    """``threads`` torch threads inside the block, the caller's setting restored after it."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_WORKER: ShardBuilder | None = None


def _init_worker(options: BuildOptions, workers: int) -> None:
    import torch

    global _WORKER
    # workers x threads = cores: more threads than cores makes every worker slower
    torch.set_num_threads(options.threads or max(1, (os.cpu_count() or 1) // workers))
    _WORKER = ShardBuilder(options)


def _worker_build(index: int, rows, path, voices) -> dict:
    return _WORKER.build_shard(rows, path, voices)


# --------------------------------------------------------------------------- one shard


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
        self.speaker_encoder = _speaker_encoder(options)
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
        atomic_write_text(_sidecar(path.parent / ".build", path), json.dumps(stats, indent=1))
        write_shard(samples, path, index=False)  # the whole index.json is written at the end (_write_index)
        return stats

    def _load(self, row: ManifestRow) -> dict[int, tuple[np.ndarray, int]]:
        """Decode every audio file of a row: turn index -> (mono float32, sample rate)."""
        audio = {}
        for i, turn in enumerate(row.turns):
            if turn.audio is None:
                continue
            try:
                wav, sr = read_audio(turn.audio, where=f"turns[{i}].audio: {turn.audio}")
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
            for i, turn in enumerate(row.turns):
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
        return Sample(row.key, row.task, turns, self.codec.info, row.language, row.system, agent, meta=meta)

    def _stats(self, path: Path, samples: list[Sample], skipped: list[BadRow]) -> dict:
        def tokens(text: str) -> int:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

        audio = sum(len(t.audio) / t.sample_rate for s in samples for t in s.turns if t.audio is not None)
        frames = sum(t.codes.shape[1] for s in samples for t in s.turns if t.codes is not None)
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


def _speaker_encoder(options: BuildOptions):
    if options.speaker_encoder is None:
        return None
    from .speakers import WavLMSpeakerEncoder

    return WavLMSpeakerEncoder(options.speaker_encoder, device=options.device, seed=options.seed)


# --------------------------------------------------------------------------- voices


def _resolve_voices(rows: list[ManifestRow], options: BuildOptions, out_dir: Path, max_clips: int):
    """Agent voice id -> mean embedding of up to ``max_clips`` of its assistant clips.

    Saved as ``out/voices/<id>.npy`` (inference needs the same vector) and reused on resume."""
    wanted: dict[str, list[str]] = {}
    for row in rows:
        if row.agent_voice is not None:
            clips = wanted.setdefault(row.agent_voice, [])
            clips += [t.audio for t in row.turns if t.role == "assistant" and t.audio is not None][
                : max_clips - len(clips)
            ]
    voices, failed = {}, {}
    encoder = None
    for voice, clips in sorted(wanted.items()):
        path = out_dir / "voices" / f"{voice}.npy"
        if path.exists():
            voices[voice] = load_embedding(path)
            continue
        if not clips:
            failed[voice] = f"agent_voice {voice!r} has no assistant audio in the manifest to embed"
            continue
        if options.speaker_encoder is None:
            raise ValueError(
                f"rows name agent_voice {voice!r}: set --speaker_encoder to embed its clips, "
                "or give each row an agent_speaker .npy"
            )
        encoder = encoder or _speaker_encoder(options)
        embeddings = []
        for clip in clips:
            try:
                embeddings.append(encoder.embed(*read_audio(clip)))
            except Exception as e:  # an unreadable clip is reported with its row while building
                tqdm.write(
                    f"voice {voice!r}: clip {clip} not used ({type(e).__name__}: {e})", file=sys.stderr
                )
        vec = voice_embedding(embeddings, max_clips) if embeddings else None
        if vec is None or not np.isfinite(vec).all():
            failed[voice] = f"agent_voice {voice!r}: no usable embedding (no readable clip, or NaN/inf)"
            continue
        voices[voice] = vec
        with atomic_path(path, suffix=".partial.npy") as tmp:  # np.save appends .npy to other names
            np.save(tmp, vec, allow_pickle=False)
    bad = [
        BadRow(options.manifest, r.line, r.key, "bad_embedding", failed[r.agent_voice])
        for r in rows
        if r.agent_voice in failed
    ]
    if bad and options.strict:
        raise BadRowError(bad[0])
    return voices, bad


# --------------------------------------------------------------------------- index and report


def _write_index(out_dir: Path, options: BuildOptions, entries: list[dict], skipped: list[BadRow]) -> None:
    codecs = {json.dumps(e["codec"], sort_keys=True) for e in entries}
    index = {
        "format": INDEX_FORMAT,
        "schema": SCHEMA_VERSION,
        # local paths relative to this file, so the index reads the same from any working directory
        "manifest": path_for_index(options.manifest, out_dir),
        "tokenizer": path_for_index(options.tokenizer, out_dir),
        "codec": json.loads(codecs.pop()) if len(codecs) == 1 else None,
        # must equal the model's speaker_dim (empty: no speaker vectors in this set)
        "speaker_dims": sorted({d for e in entries for d in e["speaker_dims"]}),
        "totals": {
            k: (round(sum(e[k] for e in entries), 3) if k == "audio_seconds" else sum(e[k] for e in entries))
            for k in ("samples", "audio_seconds", "text_tokens", "code_frames")
        },
        "skipped": {kind: n for kind in BAD_ROW_KINDS if (n := sum(b.kind == kind for b in skipped))},
        "shards": [
            {k: v for k, v in e.items() if k not in ("codec", "skipped", "speaker_dims")} for e in entries
        ],
    }
    atomic_write_text(
        out_dir / "skipped.jsonl",
        "".join(json.dumps(b.to_dict(), ensure_ascii=False) + "\n" for b in skipped),
    )
    atomic_write_text(out_dir / "index.json", json.dumps(index, indent=1, ensure_ascii=False))


def _print_summary(r: BuildReport) -> None:
    rate = r.audio_seconds / r.seconds if r.seconds > 0 else float("nan")
    print(
        f"{r.out}: {len(r.shards)} shards ({r.built} built, {r.resumed} already done), {r.samples} samples, "
        f"{r.audio_seconds:.1f} s of audio, {r.text_tokens} text tokens, {r.code_frames} code frames "
        f"in {r.seconds:.1f} s ({rate:.1f} audio-s/s)"
    )
    if r.skipped:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(r.skipped_counts.items()))
        print(
            f"skipped {len(r.skipped)} rows: {counts} (each with its line and reason in {r.out}/skipped.jsonl)"
        )
    else:
        print("skipped 0 rows")
