"""`qinyu-lit data build` of a VoiceDesign manifest -> pair shards -> VoiceDesignDataModule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from qinyu_lit.cli import main
from qinyu_lit.data.audio import read_audio
from qinyu_lit.data.errors import QinYuError
from qinyu_lit.data.voice_design import VoiceDesignDataModule, read_pairs
from qinyu_lit.prep.speakers import WavLMSpeakerEncoder
from qinyu_lit.tiny_configs import TINY_WAVLM


def test_voice_design_manifest_builds_pair_shards_the_datamodule_reads(tmp_path):
    rng = np.random.default_rng(0)
    for name, seconds in (("a.wav", 0.5), ("b.wav", 0.7)):
        sf.write(tmp_path / name, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000)
    given = rng.standard_normal(16).astype(np.float32)
    np.save(tmp_path / "given.npy", given)
    np.save(tmp_path / "wide.npy", rng.standard_normal(32).astype(np.float32))
    rows = [
        {"key": "keeper", "description": "a calm old man, a lighthouse keeper", "wavs": ["a.wav", "b.wav"]},
        {"key": "baker", "description": "a cheerful young woman, a baker", "wav": "b.wav"},
        {"key": "captain", "description": "a gruff sea captain", "embedding": "given.npy"},
        {"key": "wide", "description": "an embedding of another encoder", "embedding": "wide.npy"},
        {"key": "empty", "description": " ", "wav": "a.wav"},
        {"key": "lost", "description": "a voice whose clip is gone", "wav": "missing.wav"},
    ]
    manifest = tmp_path / "voices.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "shards"
    main(["data", "build", "--manifest", str(manifest), "--out", str(out), "--speaker_encoder", json.dumps(TINY_WAVLM),
          "--samples_per_shard", "2", "--progress", "false"])  # fmt: skip

    index = json.loads((out / "index.json").read_text())
    assert index["schema"] == "qinyu-voice/v1" and index["totals"]["samples"] == 4
    assert [e["samples"] for e in index["shards"]] == [2, 2] and index["speaker_dims"] == [16, 32]
    assert index["skipped"] == {"invalid_row": 1, "unreadable_audio": 1}
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [(b["line"], b["kind"]) for b in skipped] == [(5, "invalid_row"), (6, "unreadable_audio")]

    # the same encoder and code path as the speech shards' speaker vectors (seed 0, one clip at a time)
    encoder = WavLMSpeakerEncoder(TINY_WAVLM)
    clip = {n: encoder.embed(*read_audio(tmp_path / n)) for n in ("a.wav", "b.wav")}
    expected = {
        "a calm old man, a lighthouse keeper": np.mean([clip["a.wav"], clip["b.wav"]], axis=0),
        "a cheerful young woman, a baker": clip["b.wav"],
        "a gruff sea captain": given,
    }
    data = VoiceDesignDataModule(train=str(out), val=[str(out / "shard-000001.tar")], embedding_dim=16, batch_size=8)
    with pytest.warns(UserWarning, match=r"sample 'wide'.*size \[32\], expected \[16\]"):
        data.setup("fit")
    assert len(data.train_pairs.bad) == 1 and "shard-000001.tar" in data.train_pairs.bad[0]
    batch = next(iter(data.train_dataloader()))
    assert sorted(batch["description"]) == sorted(expected) and batch["embedding"].shape == (3, 16)
    for text, vec in zip(batch["description"], batch["embedding"].numpy(), strict=True):
        np.testing.assert_allclose(vec, expected[text], rtol=1e-5, atol=1e-6)
    assert data.val_pairs.descriptions == ["a gruff sea captain"] and len(data.val_pairs.bad) == 1

    # 32-d readers take the one 32-d pair; a folder with no usable pair is an error, as for JSONL
    with pytest.warns(UserWarning):
        assert read_pairs([out], 32).descriptions == ["an embedding of another encoder"]
    with pytest.warns(UserWarning), pytest.raises(QinYuError, match="no usable"):
        read_pairs(str(out / "shard-000000.tar"), 8)
