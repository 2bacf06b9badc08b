"""Preference shards (schema v2): a pair round-trips through the writer and reader, v1 shards still read,
the stream reads each pair once with both replies in one row (pack), and bad pairs are refused or skipped
with the shard, the key and the field named - from a hand-made tar and from a `data build` manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.data.errors import DataWarning
from qinyu_lit.data.schema import CodecInfo, Sample, SampleError, Turn, decode_sample, encode_sample
from qinyu_lit.prep.build import build
from qinyu_lit.prep.demo_pairs import demo_pairs, demo_pairs_cmd
from qinyu_lit.prep.manifest import BadRowError, scan_manifest

CODEC = CodecInfo("demo-rule", 8, 64, 12.5, 16000)


def pair(key: str = "p0", rejected_codes=None) -> Sample:
    codes = np.arange(24).reshape(8, 3) % 64
    return Sample(key, "tts", [Turn("user", "say hot"), Turn("assistant", "hot", codes=codes)], CODEC,
                  agent_speaker=np.ones(16, np.float32), preference="voice",
                  rejected=Turn("assistant", "hot", codes=codes + 1 if rejected_codes is None else rejected_codes))  # fmt: skip


def test_a_pair_round_trips_and_v1_documents_still_read():
    raw = encode_sample(pair())
    doc = json.loads(raw["json"])
    assert doc["schema"] == "qinyu/v2" and doc["preference"] == "voice"
    assert doc["rejected"] == {"role": "assistant", "text": "hot", "codes": "rejected.codes.npy"}
    back = decode_sample(raw, "s.tar")
    assert back.preference == "voice" and np.array_equal(back.rejected.codes, pair().rejected.codes)
    assert np.array_equal(back.turns[-1].codes, pair().turns[-1].codes)
    # an older shard: schema v1 and no pair fields
    plain = encode_sample(Sample("s0", "text", [Turn("user", "hot"), Turn("assistant", "cold")], CODEC))
    plain["json"] = json.dumps(dict(json.loads(plain["json"]), schema="qinyu/v1")).encode()
    assert decode_sample(plain).rejected is None


@pytest.mark.parametrize(
    "edit, field, reason",
    [
        (lambda d: d.pop("preference"), "preference", "needs its kind"),
        (lambda d: d.pop("rejected"), "rejected", "needs the rejected reply"),
        (lambda d: d["rejected"].update(role="user", codes=None), "rejected.role", "the assistant's"),
        (lambda d: d.update(schema="qinyu/v3"), "schema", "expected one of"),
    ],
)
def test_broken_pair_fields_name_the_field(edit, field, reason):
    raw = encode_sample(pair())
    doc = json.loads(raw["json"])
    edit(doc)
    raw["json"] = json.dumps(doc).encode()
    with pytest.raises(SampleError, match=rf"s.tar: sample 'p0', field '{field}': .*{reason}"):
        decode_sample(raw, "s.tar")


@pytest.mark.filterwarnings("ignore:1 shard.* have no index.json entry")  # a hand-made tar has none
def test_identical_replies_are_refused_by_the_writer_and_skipped_and_counted_by_the_reader(tmp_path, demo_dir):
    same = encode_sample(pair("same"))
    same["rejected.codes.npy"] = same["turn1.codes.npy"]  # what a tool other than ours might write
    with pytest.raises(SampleError, match="sample 'same', field 'rejected': identical to the chosen reply"):
        decode_sample(same)
    # a hand-made tar (no validator on the way in): the stream warns, skips and counts it, and goes on
    (tmp_path / "set").mkdir()
    with wds.TarWriter(str(tmp_path / "set" / "shard-000000.tar")) as sink:
        for raw in (encode_sample(pair("good0")), same, encode_sample(pair("good1"))):
            sink.write(raw)
    dm = QinYuDataModule(train=str(tmp_path / "set"), tokenizer=str(demo_dir / "tokenizer"), codebook_size=64,
                         batch_size=4, shuffle_buffer=0)  # fmt: skip
    with pytest.warns(DataWarning, match=r"shard-000000.tar: sample 'same', field 'rejected': identical"):
        batches = list(dm.train_dataloader())
    assert [b["pairs"]["keys"] for b in batches] == [["good0", "good1"]]
    assert sum(b["data_stats"]["skipped"] for b in batches) == 1


@pytest.mark.parametrize("pack_length", [None, 200])
def test_the_stream_reads_each_pair_once_with_both_replies_in_one_row(tmp_path, demo_dir, pack_length):
    demo_pairs_cmd(str(tmp_path), count=12, val_count=2, samples_per_shard=5)
    dm = QinYuDataModule(train=str(tmp_path / "train"), tokenizer=str(demo_dir / "tokenizer"), codebook_size=64,
                         batch_size=3, shuffle_buffer=8, pack_length=pack_length)  # fmt: skip
    seen = []
    for batch in dm.train_dataloader():
        pairs, cu = batch["pairs"], batch["pack"]["cu_seqlens"].tolist()
        width = batch["input_ids"].shape[1]  # segments: each row's sequences, then its padding tail if any
        keys = [k for ks, ns in zip(batch["keys"], batch["lengths"], strict=True) for k in ks + [None] * (sum(ns) < width)]
        assert len(keys) == len(cu) - 1
        for key, c, r in zip(pairs["keys"], pairs["chosen"].tolist(), pairs["rejected"].tolist(), strict=True):
            assert keys[c] == key and keys[r] == f"{key}/rejected"
            assert r == c + 1 and cu[c] // width == cu[r] // width  # side by side, in the same row
            assert pairs["kinds"][pairs["keys"].index(key)] == key.rstrip("0123456789")
        seen += pairs["keys"]
    want = sorted(s.key for s in demo_pairs(12))
    assert sorted(seen) == want  # every pair exactly once


def test_a_pair_longer_than_the_pack_is_dropped_and_counted(tmp_path, demo_dir):
    demo_pairs_cmd(str(tmp_path), count=4, val_count=1)
    dm = QinYuDataModule(train=str(tmp_path / "train"), tokenizer=str(demo_dir / "tokenizer"), codebook_size=64,
                         batch_size=1, shuffle_buffer=0, pack_length=40)  # a word pair: 2 x 12, a voice pair: 2 x 29
    batches = list(dm.train_dataloader())
    assert sorted(k for b in batches for k in b["pairs"]["keys"]) == sorted(s.key for s in demo_pairs(4) if s.preference == "word")
    assert sum(b["data_stats"]["dropped_overlong"] for b in batches) == 4


# --------------------------------------------------------------------------- data build from a manifest of pairs


def pairs_manifest(root: Path, rows: list[dict]) -> Path:
    from tests.prep.test_build import write_tone

    (root / "wav").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(("kind", "cold", "q")):
        write_tone(root / "wav" / f"{name}.wav", 0.5, 16000, 1, "WAV", 220 + 90 * i)
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "pairs.jsonl"


def row(key: str, chosen_reply: dict, rejected_reply: dict, rejected_prompt: dict | None = None) -> dict:
    prompt = {"role": "user", "audio": "wav/q.wav"}
    return {"key": key, "task": "conversation", "preference": "empathy",
            "chosen": [prompt, chosen_reply], "rejected": [rejected_prompt or prompt, rejected_reply]}  # fmt: skip


KIND = {"role": "assistant", "text": "I am sorry, that sounds hard.", "audio": "wav/kind.wav"}
COLD = {"role": "assistant", "text": "Okay.", "audio": "wav/cold.wav"}


def test_data_build_makes_preference_shards_and_reports_bad_pairs(tmp_path, demo_dir):
    from tests.prep.test_build import build_args

    rows = [row("good", KIND, COLD), row("same", KIND, dict(KIND)),
            row("differ", KIND, COLD, rejected_prompt={"role": "user", "text": "another question"})]  # fmt: skip
    manifest = pairs_manifest(tmp_path, rows)
    report = build(**build_args(manifest, tmp_path / "out", demo_dir / "tokenizer", speaker_encoder=None))
    assert report.samples == 1 and report.skipped_counts == {"identical_pair": 1, "invalid_row": 1}
    bad = {b.key: b.reason for b in report.skipped}
    assert "rejected[0] differs from chosen[0]: the prompts differ" in bad["differ"]
    skipped = [json.loads(line) for line in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert {s["key"] for s in skipped} == {"same", "differ"}
    from qinyu_lit.data.tar import iter_raw_samples

    (sample,) = [decode_sample(raw) for raw in iter_raw_samples([str(tmp_path / "out" / "shard-000000.tar")])]
    assert sample.preference == "empathy" and sample.rejected.text == "Okay."
    assert sample.rejected.codes.shape[0] == 8 and sample.turns[-1].codes.shape[0] == 8  # both replies encoded
    assert sample.turns[0].audio is not None  # the shared prompt, stored once
    with pytest.raises(BadRowError, match=r"pairs.jsonl:1: invalid_row: sample 'differ': rejected\[0\] differs"):
        scan_manifest(pairs_manifest(tmp_path, rows[2:]), strict=True)
