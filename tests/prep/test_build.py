"""`qinyu-lit data build`: real audio files -> manifest -> shards -> validate -> `qinyu-lit fit`."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qinyu_lit.cli import main
from qinyu_lit.data.schema import decode_sample
from qinyu_lit.data.tar import iter_raw_samples
from qinyu_lit.prep.build import build
from qinyu_lit.prep.inspect import check_shards
from qinyu_lit.prep.speakers import WavLMSpeakerEncoder
from qinyu_lit.tiny_configs import TINY_MIMI, TINY_WAVLM

TINY_SFT = str(Path(__file__).parents[2] / "recipes" / "tiny" / "sft.yaml")
CODEBOOK_SIZE = 32  # not the tiny recipe's 64: the fit below must be told through an override
MIMI = dict(TINY_MIMI, codebook_size=CODEBOOK_SIZE)
WAVLM = TINY_WAVLM  # 16-d x-vectors = the tiny recipe's speaker_dim
# (sample rate, channels, format): mixed rates, stereo, WAV, FLAC and OGG Vorbis
AUDIO_KINDS = [
    (16000, 1, "WAV"),
    (44100, 2, "FLAC"),
    (22050, 1, "WAV"),
    (24000, 2, "FLAC"),
    (48000, 2, "OGG"),
]
WORDS = "hello world music river mountain friend coffee morning evening story song dance light".split()


def write_tone(path: Path, seconds: float, sample_rate: int, channels: int, fmt: str, freq: float) -> Path:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))
    data = np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1)
    sf.write(path, data, sample_rate, format=fmt, subtype="VORBIS" if fmt == "OGG" else "PCM_16")
    return path


def make_audio_corpus(root: Path, rows: int = 10) -> Path:
    """Audio files, speaker .npy files and a manifest whose rows cycle through the tasks."""
    (root / "audio").mkdir(parents=True, exist_ok=True)
    (root / "spk").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []

    def audio(name: str, i: int) -> str:
        sr, ch, fmt = AUDIO_KINDS[i % len(AUDIO_KINDS)]
        ext = fmt.lower()
        write_tone(root / "audio" / f"{name}.{ext}", 0.4 + 0.15 * (i % 4), sr, ch, fmt, 200 + 40 * i)
        return f"audio/{name}.{ext}"

    for i in range(rows):
        words = " ".join(rng.choice(WORDS, size=3 + i % 3))
        spk = f"spk/user{i}.npy"
        np.save(root / spk, rng.standard_normal(16).astype(np.float32))
        task = ["asr", "tts", "conversation", "sqa", "text", "singing"][i % 6]
        voice = ["mira", "lin"][i % 2]
        if task == "asr":
            turns = [{"role": "user", "text": "Convert the speech to text.", "audio": audio(f"q{i}", i)},
                     {"role": "assistant", "text": words}]  # fmt: skip
            row = {"task": task, "turns": turns}
        elif task == "tts":
            turns = [{"role": "user", "text": "Convert the text to speech.\n" + words},
                     {"role": "assistant", "text": words, "audio": audio(f"a{i}", i)}]  # fmt: skip
            row = {"task": task, "agent_voice": voice, "turns": turns}
        elif task in ("conversation", "singing"):
            turns = [{"role": "user", "audio": audio(f"q{i}", i), "speaker": spk},
                     {"role": "assistant", "text": words, "audio": audio(f"a{i}", i + 1)}]  # fmt: skip
            row = {"task": task, "agent_voice": voice, "system": "You are a kind singer.", "turns": turns}
        elif task == "sqa":
            turns = [{"role": "user", "audio": audio(f"q{i}", i)}, {"role": "assistant", "text": words}]
            row = {"task": task, "turns": turns}
        else:
            row = {
                "task": task,
                "language": "zh",
                "turns": [{"role": "user", "text": words}, {"role": "assistant", "text": words}],
            }
        lines.append(json.dumps(dict(row, key=f"{task}-{i:04d}")))
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def build_args(manifest: Path, out: Path, tokenizer: Path, **extra) -> dict:
    args = dict(
        manifest=str(manifest), out=str(out), tokenizer=str(tokenizer), codec=MIMI, speaker_encoder=WAVLM,
        samples_per_shard=3, codec_batch_size=4, progress=False,
    )  # fmt: skip
    return dict(args, **extra)


def test_build_validate_and_fit(tmp_path, demo_dir, monkeypatch):
    manifest = make_audio_corpus(tmp_path / "corpus", rows=10)
    out = tmp_path / "shards"
    report = build(**build_args(manifest, out, demo_dir / "tokenizer"))
    assert report.samples == 10 and len(report.shards) == 4 and not report.skipped
    assert check_shards(str(out), tokenizer=str(demo_dir / "tokenizer")) == []

    rows = {json.loads(line)["key"]: json.loads(line) for line in manifest.read_text().splitlines()}
    samples = [decode_sample(raw) for raw in iter_raw_samples(report.shards)]
    assert [s.key for s in samples] == list(rows)  # manifest order
    encoder = WavLMSpeakerEncoder(WAVLM)
    frames = 0
    for s in samples:
        row = rows[s.key]
        assert s.codec.name == "mimi-random" and (s.codec.num_codebooks, s.codec.codebook_size) == (
            8,
            CODEBOOK_SIZE,
        )
        assert (s.task, s.system, [t.text for t in s.turns]) == (
            row["task"],
            row.get("system", ""),
            [t.get("text", "") for t in row["turns"]],
        )
        for t, src in zip(s.turns, row["turns"], strict=True):
            if "audio" not in src:
                continue
            info = sf.info(manifest.parent / src["audio"])
            if t.role == "user":  # kept as a 16 kHz mono waveform
                assert t.sample_rate == 16000 and t.audio.ndim == 1
                assert abs(len(t.audio) - info.frames * 16000 / info.samplerate) <= 1
            else:  # 12.5 Hz codes, one frame per started 1920 samples at 24 kHz
                expected = math.ceil(round(info.frames * 24000 / info.samplerate) / 1920)
                assert t.codes.shape == (8, expected) and 0 <= t.codes.min() and t.codes.max() < CODEBOOK_SIZE
                frames += expected
        if "speaker" in row["turns"][0]:
            np.testing.assert_array_equal(
                s.turns[0].speaker, np.load(manifest.parent / row["turns"][0]["speaker"])
            )
        elif s.turns[0].audio is not None:  # no .npy: embedded by WavLMForXVector
            wav, sr = sf.read(manifest.parent / row["turns"][0]["audio"], dtype="float32", always_2d=True)
            np.testing.assert_allclose(
                s.turns[0].speaker, encoder.embed(wav.mean(1), sr), rtol=1e-5, atol=1e-7
            )
    # an agent voice is the mean of its clips' embeddings, stored for inference too
    clips = [
        manifest.parent / t["audio"]
        for r in rows.values()
        if r.get("agent_voice") == "mira"
        for t in r["turns"]
        if t["role"] == "assistant"
    ]
    mean = np.mean(
        [
            encoder.embed(sf.read(c, dtype="float32", always_2d=True)[0].mean(1), sf.info(c).samplerate)
            for c in clips
        ],
        axis=0,
    )
    np.testing.assert_allclose(np.load(out / "voices" / "mira.npy"), mean, rtol=1e-5, atol=1e-7)
    assert all(
        np.array_equal(s.agent_speaker, np.load(out / "voices" / "mira.npy"))
        for s in samples
        if rows[s.key].get("agent_voice") == "mira"
    )

    index = json.loads((out / "index.json").read_text())
    assert index["codec"] == {
        "name": "mimi-random",
        "num_codebooks": 8,
        "codebook_size": CODEBOOK_SIZE,
        "frame_rate": 12.5,
        "sample_rate": 24000,
    }
    assert [e["samples"] for e in index["shards"]] == [3, 3, 3, 1]
    assert index["totals"]["code_frames"] == frames and index["speaker_dims"] == [16]

    monkeypatch.chdir(tmp_path)  # the recipe's checkpoint dirpath (checkpoints/tiny_sft) is relative: not into the checkout
    main([
        "fit", "--config", TINY_SFT,
        "--data.init_args.train", str(out), "--data.init_args.val", "null",
        "--data.init_args.tokenizer", str(demo_dir / "tokenizer"),
        "--data.init_args.codebook_size", str(CODEBOOK_SIZE),
        "--data.init_args.num_workers", "0", "--data.init_args.batch_size", "2",
        "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1",
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
    ])  # fmt: skip
    events = EventAccumulator(str(next((tmp_path / "runs").glob("tiny_sft/version_*"))))
    events.Reload()
    losses = [e.value for e in events.Scalars("train/loss")]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_killed_build_resumes_byte_identical(tmp_path, demo_dir):
    manifest = make_audio_corpus(tmp_path / "corpus", rows=8)
    # one torch thread in both processes: the thread count decides float summation order
    args = build_args(manifest, tmp_path / "whole", demo_dir / "tokenizer", samples_per_shard=1, threads=1)
    whole = build(**args)
    assert len(whole.shards) == 8

    # the same build in another process, killed (SIGKILL, no cleanup) once its first shard is in place
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "qinyu_lit.cli", "data", "build", "--manifest", str(manifest), "--out", str(killed),
           "--tokenizer", str(demo_dir / "tokenizer"), "--codec", json.dumps(MIMI), "--speaker_encoder", json.dumps(WAVLM),
           "--samples_per_shard", "1", "--codec_batch_size", "4", "--progress", "false", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    try:
        while not (killed / "shard-000000.tar").exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "the build wrote no shard in 120 s"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the build and anything it started
        proc.wait()
    done_before = sorted(p.name for p in killed.glob("*.tar"))
    assert "shard-000007.tar" not in done_before and not (killed / "index.json").exists()

    resumed = build(**dict(args, out=str(killed)))
    assert resumed.resumed == len(done_before) and resumed.built == 8 - len(done_before)
    assert _tree(killed) == _tree(tmp_path / "whole")  # shards, index.json, skipped.jsonl
    assert _tree(killed / "voices") == _tree(tmp_path / "whole" / "voices")
    assert not list(killed.glob("*.partial"))


def test_resume_refuses_other_options(tmp_path, demo_dir):
    manifest = make_audio_corpus(tmp_path / "corpus", rows=2)
    args = build_args(manifest, tmp_path / "out", demo_dir / "tokenizer")
    build(**args)
    with pytest.raises(ValueError, match="changed: samples_per_shard"):
        build(**dict(args, samples_per_shard=1))


def test_inspect_and_validate_commands(tmp_path, demo_dir, capsys):
    manifest = make_audio_corpus(tmp_path / "corpus", rows=3)  # asr, tts, conversation
    out = tmp_path / "out"
    build(**build_args(manifest, out, demo_dir / "tokenizer"))
    capsys.readouterr()

    main(["data", "inspect", str(out / "shard-000000.tar"), "--samples", "3", "--frames", "2"])
    text = capsys.readouterr().out
    assert "== conversation-0002  task=conversation  language=en  codec=mimi-random 8x32 @ 12.5 Hz" in text
    assert "turn 0 user: text 'Convert the speech to text.'; speech 0.40 s @ 16000 Hz" in text
    assert "turn 1 assistant: text" in text and "codes [8, " in text and "    frame 1: " in text
    # the layout as trained (tokenizer taken from index.json): speaker slots, audio placeholders,
    # supervised delayed frames with pad codes (_) from the delay
    assert "<|user_speaker|>" in text and "<|audio|>x" in text and "*<|speaker|>" not in text
    assert "*[" in text and "_]" in text

    main(["data", "validate", str(out)])
    assert "1 shards, 3 samples, " in (checked := capsys.readouterr().out) and checked.strip().endswith(
        "; 0 problems"
    )

    index = json.loads((out / "index.json").read_text())
    index["shards"][0]["code_frames"] += 1
    (out / "index.json").write_text(json.dumps(index))
    (out / "shard-000001.tar.partial").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_:
        main(["data", "validate", str(out)])
    assert exit_.value.code == 1
    report = capsys.readouterr().out
    assert (
        "shard shard-000000.tar: index says code_frames=" in report
        and "unfinished files ['shard-000001.tar.partial']" in report
    )
