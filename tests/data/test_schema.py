"""Round trips through the shard format, and bad samples named by shard, key and field."""

import io

import numpy as np
import pytest
import webdataset as wds

from qinyu_lit.data.schema import CodecInfo, Sample, SampleError, Turn, decode_sample, encode_sample
from qinyu_lit.data.tar import iter_raw_samples
from qinyu_lit.prep.writer import write_shard

CODEC = CodecInfo("test", 8, 64, 12.5, 16000)


def good_sample(key="s1"):
    wav = (0.1 * np.sin(np.arange(8000) / 10)).astype(np.float32)
    codes = np.arange(8 * 5).reshape(8, 5) % 64
    return Sample(
        key,
        "conversation",
        [Turn("user", "hi", wav, 16000, speaker=np.ones(4, np.float32)), Turn("assistant", "hello", codes=codes)],
        CODEC,
        system="Be nice.",
        agent_speaker=np.full(4, 0.5, np.float32),
    )


def test_round_trip_through_a_shard(tmp_path):
    path = tmp_path / "shard-000000.tar"
    assert write_shard([good_sample("a"), good_sample("b")], path) == 2
    samples = [decode_sample(raw) for raw in iter_raw_samples([str(path)])]
    assert [s.key for s in samples] == ["a", "b"]
    s = samples[0]
    assert s.shard == str(path) and s.system == "Be nice." and s.codec == CODEC
    np.testing.assert_array_equal(s.turns[1].codes, good_sample().turns[1].codes)
    np.testing.assert_allclose(s.turns[0].audio, good_sample().turns[0].audio, atol=1 / 32768)  # 16-bit FLAC
    np.testing.assert_array_equal(s.agent_speaker, np.full(4, 0.5, np.float32))
    assert not list(tmp_path.glob("*.partial"))


def npy(a):
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def corrupt(raw, kind):
    raw = dict(raw)
    if kind == "missing member":
        del raw["turn1.codes.npy"]
    elif kind == "7 codebooks":
        raw["turn1.codes.npy"] = npy(np.zeros((7, 5), np.int16))
    elif kind == "code id too large":
        raw["turn1.codes.npy"] = npy(np.full((8, 5), 64, np.int16))
    elif kind == "empty turns":
        raw["json"] = raw["json"].replace(b'"turns": [', b'"turns": [], "x": [')
    elif kind == "nan embedding":
        raw["agent.speaker.npy"] = npy(np.array([np.nan, 1, 2, 3], np.float32))
    elif kind == "undecodable audio":
        raw["turn0.flac"] = b"not a flac file"
    return raw


@pytest.mark.parametrize(
    "kind, field, reason",
    [
        ("missing member", "turns[1].codes", "missing from the shard"),
        ("7 codebooks", "turns[1].codes", r"expected shape \[8, frames\], got \[7, 5\]"),
        ("code id too large", "turns[1].codes", r"must lie in \[0, 64\)"),
        ("empty turns", "turns", "non-empty list"),
        ("nan embedding", "agent_speaker", "NaN"),
        ("undecodable audio", "turns[0].audio", "undecodable audio"),
    ],
)
def test_bad_sample_errors_name_shard_key_and_field(kind, field, reason):
    raw = corrupt(encode_sample(good_sample("bad7")), kind)
    with pytest.raises(SampleError, match=reason) as err:
        decode_sample(raw, shard="data/shard-000003.tar")
    assert (err.value.shard, err.value.key, err.value.field) == ("data/shard-000003.tar", "bad7", field)
    assert str(err.value).startswith(f"data/shard-000003.tar: sample 'bad7', field '{field}':")


def test_reader_reports_the_shard_path_of_a_bad_sample(tmp_path):
    path = tmp_path / "shard-000000.tar"
    with wds.TarWriter(str(path)) as sink:
        sink.write(encode_sample(good_sample("fine")))
        sink.write(corrupt(encode_sample(good_sample("broken")), "7 codebooks"))
    raws = list(iter_raw_samples([str(path)]))
    decode_sample(raws[0])
    with pytest.raises(SampleError, match=f"{path}: sample 'broken', field 'turns\\[1\\].codes'"):
        decode_sample(raws[1])


def test_writer_refuses_a_bad_sample_and_leaves_no_shard(tmp_path):
    bad = good_sample("bad")
    bad.turns[1].codes = bad.turns[1].codes[:7]
    path = tmp_path / "shard-000000.tar"
    with pytest.raises(SampleError, match="expected shape"):
        write_shard([good_sample("ok"), bad], path)
    assert not path.exists() and not list(tmp_path.iterdir())  # no shard, no leftover .partial
