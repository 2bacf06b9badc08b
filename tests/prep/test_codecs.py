"""Codecs: Mimi shapes and rates, a plugged-in codec's codes land in the shards unchanged, and
a codec that does not match the model is refused at training time with a clear error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.data.index import check_index_codec
from qinyu_lit.data.schema import CodecMismatch, decode_sample
from qinyu_lit.data.tar import iter_raw_samples
from qinyu_lit.prep.build import build
from qinyu_lit.prep.codecs import AudioCodec, MimiCodec, load_codec
from qinyu_lit.tiny_configs import TINY_MIMI
from tests.prep.test_build import MIMI, write_tone


class EnergyCodec(AudioCodec):
    """A deterministic codec whose codes depend on the audio (a random Mimi's do not): codebook j
    of a frame is the frame's quantised RMS plus j. Proves the build plumbs codes through unchanged."""

    name, num_codebooks, codebook_size, frame_rate, sample_rate = "energy", 4, 100, 25.0, 16000

    def __init__(self, model="", num_quantizers=4, device="cpu", seed=0):
        self.num_codebooks = num_quantizers

    def encode(self, waves):
        hop = int(self.sample_rate / self.frame_rate)
        out = []
        for w in waves:
            frames = np.pad(w, (0, -len(w) % hop)).reshape(-1, hop)
            level = np.minimum((np.sqrt((frames**2).mean(1)) * 200).astype(np.int64), 90)
            out.append(np.stack([level + j for j in range(self.num_codebooks)]))
        return out


def test_mimi_shapes_rates_and_decode():
    codec = MimiCodec(TINY_MIMI, num_quantizers=8)
    assert codec.info.__dict__ == dict(
        name="mimi-random", num_codebooks=8, codebook_size=64, frame_rate=12.5, sample_rate=24000
    )
    lengths = [24000, 24001, 1000, 9600]
    codes = codec.encode([np.random.default_rng(n).uniform(-0.5, 0.5, n).astype(np.float32) for n in lengths])
    assert [c.shape for c in codes] == [
        (8, 13),
        (8, 13),
        (8, 1),
        (8, 5),
    ]  # one frame per started 1920 samples
    assert all(c.dtype == np.int64 and 0 <= c.min() and c.max() < 64 for c in codes)
    assert codec.decode(codes[0]).shape == (13 * 1920,)  # 80 ms of 24 kHz audio per frame
    assert MimiCodec(TINY_MIMI, num_quantizers=3).encode([np.zeros(4000, np.float32)])[0].shape == (3, 3)


def test_codec_arguments_are_checked():
    with pytest.raises(ValueError, match=r"num_quantizers must lie in \[1, 8\]"):
        MimiCodec(TINY_MIMI, num_quantizers=9)
    with pytest.raises(ValueError, match="not an importable class"):
        load_codec("qinyu_lit.prep.codecs.NoSuchCodec")
    with pytest.raises(ValueError, match="must subclass"):
        load_codec("numpy.ndarray")


def test_plugged_in_codec_codes_reach_the_shard(tmp_path, demo_dir):
    write_tone(tmp_path / "a.wav", 0.5, 48000, 2, "WAV", 330)
    row = {
        "key": "k",
        "task": "tts",
        "turns": [{"role": "user", "text": "say"}, {"role": "assistant", "text": "la", "audio": "a.wav"}],
    }
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    report = build(
        manifest=str(tmp_path / "m.jsonl"), out=str(tmp_path / "out"), tokenizer=str(demo_dir / "tokenizer"),
        codec_class="tests.prep.test_codecs.EnergyCodec", num_quantizers=4, progress=False,
    )  # fmt: skip
    (sample,) = [decode_sample(raw) for raw in iter_raw_samples(report.shards)]
    wav, sr = sf.read(tmp_path / "a.wav", dtype="float32", always_2d=True)
    from qinyu_lit.data.features import resample

    expected = EnergyCodec().encode([resample(wav.mean(1), sr, 16000)])[0]
    np.testing.assert_array_equal(sample.turns[1].codes, expected)
    assert len(set(expected[0].tolist())) > 3  # the codes follow the audio envelope
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["codec"] == dict(
        name="energy", num_codebooks=4, codebook_size=100, frame_rate=25.0, sample_rate=16000
    )
    assert index["totals"]["code_frames"] == math.ceil(0.5 * 25)


def test_codec_mismatch_is_a_clear_error_at_training_time(tmp_path, demo_dir):
    write_tone(tmp_path / "a.flac", 0.4, 24000, 1, "FLAC", 330)
    row = {
        "key": "tts-1",
        "task": "tts",
        "turns": [{"role": "user", "text": "say"}, {"role": "assistant", "text": "la", "audio": "a.flac"}],
    }
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    out = tmp_path / "out"
    build(
        manifest=str(tmp_path / "m.jsonl"),
        out=str(out),
        tokenizer=str(demo_dir / "tokenizer"),
        codec=MIMI,
        progress=False,
    )
    # the whole set, from the index, before anything streams
    with pytest.raises(
        ValueError,
        match=r"shards hold 8 x 32 codes \(mimi-random, 12.5 Hz\) but the model expects 8 x 64: "
        r"set --data.init_args.num_codebooks 8 --data.init_args.codebook_size 32",
    ):
        check_index_codec(out, num_codebooks=8, codebook_size=64)
    check_index_codec(out, num_codebooks=8, codebook_size=32)
    # each sample, while streaming (the model-side check in TokenLayout): fatal even when bad
    # samples are otherwise skipped (strict=False), since no sample of the set could be used
    data = QinYuDataModule(
        train=str(out),
        tokenizer=str(demo_dir / "tokenizer"),
        codebook_size=64,
        num_workers=0,
        shuffle_buffer=0,
        strict=False,
    )
    with pytest.raises(CodecMismatch) as err:
        next(iter(data.train_dataloader()))
    message = str(err.value)
    assert "shard-000000.tar: sample 'tts-1', field 'codec'" in message
    assert "8 x 32 (mimi-random)" in message and "expects 8 x 64" in message and "--data.init_args.codebook_size 32" in message
