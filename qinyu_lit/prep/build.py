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
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..data.files import atomic_write_text
from ..data.index import path_for_index, write_index
from .manifest import BAD_ROW_KINDS, BadRow, scan_manifest
from .shard_builder import BuildOptions, ShardBuilder, sidecar
from .voice_design_shards import build_voice_design, is_voice_design_manifest
from .voices import resolve_voices
from .writer import shard_name


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

    A VoiceDesign manifest (rows of ``description`` + ``embedding | wav | wavs``) builds pair shards
    instead (``voice_design_shards.py``; only ``speaker_encoder``, ``device``, ``seed``, ``strict`` and
    ``samples_per_shard`` apply).

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
    if is_voice_design_manifest(manifest):  # (description, embedding) rows: VoiceDesign pair shards
        options = BuildOptions(str(manifest), str(tokenizer), codec, codec_class, num_quantizers, speaker_encoder,
                               user_speakers, user_sample_rate, codec_batch_size, device, seed, strict, threads)  # fmt: skip
        return build_voice_design(options, out, samples_per_shard)
    start = time.perf_counter()
    out_dir = Path(out)
    state = out_dir / ".build"
    fresh = not state.exists()  # this call starts the build (it does not resume one)
    state.mkdir(parents=True, exist_ok=True)
    try:
        options = BuildOptions(
            manifest=str(manifest), tokenizer=str(tokenizer), codec=codec, codec_class=codec_class,
            num_quantizers=num_quantizers, speaker_encoder=speaker_encoder, user_speakers=user_speakers,
            user_sample_rate=user_sample_rate, codec_batch_size=codec_batch_size, device=device, seed=seed,
            strict=strict, threads=threads,
        )  # fmt: skip
        _claim(out_dir, options, manifest, max_audio_seconds, samples_per_shard, voice_clips, workers)
        rows, voices, skipped = _usable_rows(options, out_dir, max_audio_seconds, voice_clips)
        plan = [rows[i : i + samples_per_shard] for i in range(0, len(rows), samples_per_shard)]
        paths = [out_dir / shard_name(i) for i in range(len(plan))]
        done = {i for i, p in enumerate(paths) if p.exists() and sidecar(state, p).exists()}
        stats = {i: json.loads(sidecar(state, paths[i]).read_text()) for i in done}
        todo = [i for i in range(len(plan)) if i not in done]
        _build_shards(options, plan, paths, todo, voices, stats, workers, progress)

        entries = [stats[i] for i in range(len(plan))]
        skipped += [BadRow(**b) for s in entries for b in s["skipped"]]
        skipped.sort(key=lambda b: b.line)
        _write_index(out_dir, options, entries, skipped)
        report = BuildReport(
            out=str(out_dir), shards=[str(p) for p in paths], built=len(todo), resumed=len(done),
            samples=sum(s["samples"] for s in entries), audio_seconds=sum(s["audio_seconds"] for s in entries),
            text_tokens=sum(s["text_tokens"] for s in entries), code_frames=sum(s["code_frames"] for s in entries),
            seconds=time.perf_counter() - start, skipped=skipped,
        )  # fmt: skip
        _print_summary(report)
        return report
    except BaseException:
        if fresh:
            _release(out_dir)
        raise


def _usable_rows(options: BuildOptions, out_dir: Path, max_audio_seconds: float, voice_clips: int):
    """The manifest's good rows whose agent voice resolves, the voices, and every row skipped so far."""
    scan = scan_manifest(options.manifest, max_audio_seconds=max_audio_seconds, strict=options.strict)
    voices, voice_bad = resolve_voices(scan.rows, options, out_dir, voice_clips)
    for bad in scan.bad + voice_bad:
        tqdm.write(f"skipped {bad}", file=sys.stderr)
    bad_lines = {b.line for b in voice_bad}
    return [r for r in scan.rows if r.line not in bad_lines], voices, list(scan.bad) + voice_bad


def _build_shards(options: BuildOptions, plan, paths, todo, voices, stats: dict, workers: int, progress: bool) -> None:
    """Build the shards ``todo`` in this process or in ``workers`` processes; their stats go to ``stats``."""
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
            with _torch_threads(options.threads):
                builder = ShardBuilder(options)
                for i in todo:
                    finished(i, builder.build_shard(plan[i], paths[i], voices))
        else:
            _run_pool(workers, options, [(i, plan[i], paths[i], voices) for i in todo], finished)
    finally:
        bar.close()


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


# --------------------------------------------------------------------------- index and report


def _write_index(out_dir: Path, options: BuildOptions, entries: list[dict], skipped: list[BadRow]) -> None:
    codecs = {json.dumps(e["codec"], sort_keys=True) for e in entries}
    index = {
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
    write_index(out_dir, index)


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
