"""Typos are errors, not defaults; a shard set is checked for what training needs across samples;
the offline codec emits varied codes; a failed first build leaves no lock; index paths resolve anywhere."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from qinyu_lit.data.errors import QinYuError
from qinyu_lit.data.tar import ShardCursor, iter_raw_samples
from qinyu_lit.model.encoders import build_audio_encoder, build_backbone
from qinyu_lit.prep.build import build
from qinyu_lit.prep.codecs import MimiCodec, constant_codes
from qinyu_lit.prep.demo import demo_samples
from qinyu_lit.prep.inspect import check_shards
from qinyu_lit.prep.manifest import scan_manifest
from qinyu_lit.prep.speakers import WavLMSpeakerEncoder
from qinyu_lit.prep.writer import write_shard
from qinyu_lit.tiny_configs import TINY_FUN_ASR_NANO as TINY_ENCODER
from qinyu_lit.tiny_configs import TINY_MIMI, tiny_backbone
from tests.prep.test_build import WAVLM, build_args, make_audio_corpus

# ---------------------------------------------------------------------------- config dicts


def test_backbone_typo_names_the_key_and_the_nearest_valid_one():
    spec = tiny_backbone(64)
    spec["hiden_size"] = spec.pop("hidden_size")
    with pytest.raises(QinYuError, match=r"net\.backbone \(Qwen3Config\): unknown key 'hiden_size'; did you mean 'hidden_size'"):
        build_backbone(spec)
    with pytest.raises(QinYuError, match="model_type must name a transformers model"):
        build_backbone({"model_type": "qwen33", "hidden_size": 64})
    # the valid dict builds exactly the tiny width (the typo would have built Qwen3's default 4096)
    assert build_backbone(tiny_backbone(64)).config.hidden_size == 64


@pytest.mark.parametrize(
    ("make", "base", "typo", "near"),
    [
        (build_audio_encoder, TINY_ENCODER, "num_hiden_layers", "num_hidden_layers"),
        (MimiCodec, TINY_MIMI, "codebok_size", "codebook_size"),
        (WavLMSpeakerEncoder, WAVLM, "xvector_output_dims", "xvector_output_dim"),
    ],
    ids=["audio_encoder", "codec", "speaker_encoder"],
)
def test_encoder_codec_and_speaker_dict_typos_fail(make, base, typo, near):
    good = dict(base)
    good[typo] = good.pop(near)
    with pytest.raises(QinYuError, match=f"unknown key '{typo}'; did you mean '{near}'"):
        make(good)


# ---------------------------------------------------------------------------- manifest fields


def test_unknown_manifest_fields_are_bad_rows_with_their_line(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    rows = [
        {"key": "ok", "task": "text", "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "yo"}]},
        {"key": "t1", "task": "asr", "turns": [{"role": "user", "audo": "a.wav"}, {"role": "assistant", "text": "x"}]},
        {"key": "t2", "task": "text", "sytem": "be kind", "turns": [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "x"}]},
    ]  # fmt: skip
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scan = scan_manifest(manifest)
    assert [r.key for r in scan.rows] == ["ok"]
    assert [(b.line, b.key, b.kind) for b in scan.bad] == [(2, "t1", "invalid_row"), (3, "t2", "invalid_row")]
    assert "turns[0]: unknown field 'audo'; did you mean 'audio'?" in str(scan.bad[0])
    assert str(scan.bad[1]).startswith(f"{manifest}:3: invalid_row: sample 't2': unknown field 'sytem'; did you mean 'system'")


# ---------------------------------------------------------------------------- validate across samples


def _demo(task: str, n: int, speaker_dim: int = 16, codebook_size: int = 64, seed: int = 0):
    return list(demo_samples(task, n, seed, speaker_dim, 8, codebook_size))


def test_validate_finds_mixed_speaker_sizes_and_codes_unlike_the_index(tmp_path, capsys):
    folder = tmp_path / "set"
    write_shard(_demo("tts", 3), folder / "shard-000000.tar")
    write_shard(_demo("conversation", 2, speaker_dim=32, seed=1), folder / "shard-000001.tar")
    problems = check_shards(str(folder))
    key32 = _demo("conversation", 1, speaker_dim=32, seed=1)[0].key
    mixed = [p for p in problems if p.startswith("speaker vectors of different sizes")]
    assert len(mixed) == 1 and f"32 (first: {folder / 'shard-000001.tar'}: sample {key32!r})" in mixed[0]

    # one speaker size, but the index says the codes are 8 x 1024 while the samples hold 8 x 64
    write_shard(_demo("conversation", 2, seed=1), folder / "shard-000001.tar")
    index = {"format": "qinyu-index/v1", "codec": {"name": "x", "num_codebooks": 8, "codebook_size": 1024},
             "speaker_dims": [16], "totals": {"samples": 5},
             "shards": [{"path": "shard-000000.tar", "samples": 3}, {"path": "shard-000001.tar", "samples": 2}]}  # fmt: skip
    (folder / "index.json").write_text(json.dumps(index))
    problems = check_shards(str(folder))
    first = _demo("tts", 1)[0].key
    assert f"{folder / 'shard-000000.tar'}: sample {first!r}: codes are 8 x 64 but index.json says 8 x 1024" in problems
    assert not any(p.startswith("speaker vectors") for p in problems)


def test_members_of_a_sample_must_be_adjacent(tmp_path):
    good = tmp_path / "good.tar"
    write_shard(_demo("tts", 2), good)
    with tarfile.open(good) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    a, b = members[0][0].name.split(".")[0], None
    rest = [x for x in members if not x[0].name.startswith(a + ".")]
    b = rest[0][0].name.split(".")[0]
    own = sorted((x for x in members if x[0].name.startswith(a + ".")), key=lambda x: not x[0].name.endswith(".json"))
    shuffled = tmp_path / "split.tar"
    with tarfile.open(shuffled, "w") as t:  # a's first member, then all of b, then the rest of a
        for m, data in [own[0]] + rest + own[1:]:
            t.addfile(m, io.BytesIO(data))
    message = f"{shuffled}: members of sample {a!r} are not adjacent"
    with pytest.raises(tarfile.ReadError, match=message):
        list(iter_raw_samples([str(shuffled)]))
    cursor = ShardCursor(str(shuffled))
    assert cursor.next_sample()["__key__"] == a and cursor.next_sample()["__key__"] == b
    with pytest.raises(tarfile.ReadError, match="must be consecutive in the tar"):
        cursor.next_sample()
    problems = check_shards(str(shuffled))
    assert any("is missing from the shard (a sample's members must be adjacent)" in p for p in problems)
    assert any(message in p for p in problems)


# ---------------------------------------------------------------------------- the offline codec


def test_tiny_mimi_emits_varied_decodable_codes_and_constant_codes_are_spotted():
    codec = MimiCodec("tiny-mimi", seed=0)
    assert (codec.name, codec.num_codebooks, codec.codebook_size, codec.frame_rate) == ("tiny-mimi-random", 8, 64, 12.5)
    rng = np.random.default_rng(0)
    t = np.arange(24000) / 24000
    waves = [0.3 * np.sin(2 * np.pi * 220 * t).astype(np.float32), (0.1 * rng.standard_normal(24000)).astype(np.float32)]
    codes = codec.encode(waves)
    assert [c.shape for c in codes] == [(8, 13), (8, 13)]
    assert all(len(np.unique(c[q])) > 1 for c in codes for q in range(8))  # varies over time, in every codebook
    assert not np.array_equal(codes[0], codes[1])  # and with the input
    assert np.array_equal(MimiCodec("tiny-mimi", seed=0).encode(waves)[0], codes[0])  # seeded: same codec anywhere
    wav = codec.decode(codes[0])
    assert wav.shape[0] >= 24000 and np.isfinite(wav).all() and wav.std() > 0
    assert not constant_codes(codes)
    assert constant_codes([np.zeros((8, 5), np.int64), np.zeros((8, 3), np.int64)])
    assert not constant_codes([np.zeros((8, 1), np.int64)])  # one frame says nothing either way


class UntrainedMimi(MimiCodec):
    """Mimi exactly as transformers initialises it (zero codebooks): one code per codebook."""

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        for name, buf in self.model.named_buffers():
            if name.endswith("codebook.embed_sum"):
                buf.zero_()


def test_build_warns_about_constant_codes_and_a_failed_first_build_leaves_no_lock(tmp_path, demo_dir, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = make_audio_corpus(tmp_path / "corpus", rows=3)
    out = tmp_path / "out"
    with pytest.raises(QinYuError, match="no such tokenizer folder"):  # nothing written: the tokenizer does not load
        build(**build_args(manifest, out, tmp_path / "no-such-tokenizer"))
    assert not out.exists()
    # the retry with other options is not refused as "another build"
    build(**build_args(manifest, out, demo_dir / "tokenizer", codec=dict(TINY_MIMI, codebook_size=32),
                       codec_class=f"{__name__}.UntrainedMimi"))  # fmt: skip
    err = capsys.readouterr().err
    assert "shard-000000.tar: codec 'mimi-random' emitted one constant code per codebook" in err
    assert err.count("emitted one constant code") == 1
    index = json.loads((out / "index.json").read_text())
    # local paths are stored relative to the index, so they resolve from any working directory
    assert not Path(index["tokenizer"]).is_absolute() and not Path(index["manifest"]).is_absolute()
    assert (out / index["tokenizer"]).resolve() == (demo_dir / "tokenizer").resolve()
    assert (out / index["manifest"]).resolve() == manifest.resolve()
