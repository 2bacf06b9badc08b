"""Bad manifest rows: each kind reported with its line and reason, skipped and counted; --strict stops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from qinyu_lit.prep.build import build
from qinyu_lit.prep.inspect import check_shards
from qinyu_lit.prep.manifest import BadRowError, scan_manifest
from tests.prep.test_build import MIMI, write_tone


def _good(i: int, root) -> dict:
    write_tone(root / f"a{i}.flac", 0.3, 22050, 2, "FLAC", 300 + 20 * i)
    return {"key": f"good{i}", "task": "tts", "agent_speaker": "agent.npy",
            "turns": [{"role": "user", "text": "Convert the text to speech."}, {"role": "assistant", "text": f"line {i}", "audio": f"a{i}.flac"}]}  # fmt: skip


@pytest.fixture
def bad_manifest(tmp_path):
    """Good rows around one row of every bad kind; returns (manifest, {line: kind})."""
    root = tmp_path / "corpus"
    root.mkdir()
    np.save(root / "agent.npy", np.ones(16, np.float32))
    np.save(root / "nan.npy", np.array([0.1, np.nan, 0.3], np.float32))
    (root / "garbage.wav").write_bytes(b"this is not a RIFF file at all" * 10)
    write_tone(root / "long.wav", 3.0, 16000, 1, "WAV", 440)
    sf.write(
        root / "nan.wav", np.full(4000, np.nan, np.float32), 16000, subtype="FLOAT"
    )  # opens, decodes to NaN
    user = {"role": "user", "text": "hi"}
    bad = {
        "missing_audio": {"key": "b1", "task": "asr", "turns": [{"role": "user", "audio": "nowhere.wav"}, {"role": "assistant", "text": "x"}]},
        "unreadable_audio": {"key": "b2", "task": "asr", "turns": [{"role": "user", "audio": "garbage.wav"}, {"role": "assistant", "text": "x"}]},
        "empty_text": {"key": "b3", "task": "text", "turns": [user, {"role": "assistant", "text": "   "}]},
        "too_long": {"key": "b4", "task": "tts", "turns": [user, {"role": "assistant", "text": "x", "audio": "long.wav"}]},
        "bad_embedding": {"key": "b5", "task": "text", "agent_speaker": "nan.npy", "turns": [user, {"role": "assistant", "text": "x"}]},
        "duplicate_key": {"key": "good0", "task": "text", "turns": [user, {"role": "assistant", "text": "x"}]},
        "invalid_row": {"key": "b7", "task": "karaoke", "turns": [user, {"role": "assistant", "text": "x"}]},
    }  # fmt: skip
    lines, expected = [], {}
    for i, (kind, row) in enumerate(bad.items()):
        lines.append(json.dumps(_good(i, root)))
        lines.append(json.dumps(row))
        expected[len(lines)] = kind
    lines.append("{not json")
    expected[len(lines)] = "invalid_row"
    lines.append(
        json.dumps(
            {
                "key": "b9",
                "task": "sqa",
                "turns": [{"role": "user", "audio": "nan.wav"}, {"role": "assistant", "text": "x"}],
            }
        )
    )
    expected[len(lines)] = "unreadable_audio"  # found while decoding, inside the shard build
    manifest = root / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, expected


def test_each_bad_row_is_reported_with_line_and_reason_and_skipped(bad_manifest, tmp_path, demo_dir, capsys):
    manifest, expected = bad_manifest
    report = build(
        manifest=str(manifest), out=str(tmp_path / "out"), tokenizer=str(demo_dir / "tokenizer"), codec=MIMI,
        samples_per_shard=4, progress=False, max_audio_seconds=2.0,
    )  # fmt: skip
    assert {b.line: b.kind for b in report.skipped} == expected
    by_kind = {b.kind: b for b in report.skipped}
    assert "nowhere.wav does not exist" in by_kind["missing_audio"].reason
    assert "3.0 s, over the 2 s limit" in by_kind["too_long"].reason
    assert "NaN" in by_kind["bad_embedding"].reason and "nan.npy" in by_kind["bad_embedding"].reason
    assert "line 1" in by_kind["duplicate_key"].reason  # points at the first use of the key
    assert report.samples == 7 and [s.key for s in _samples(report)] == [f"good{i}" for i in range(7)]

    err = capsys.readouterr().err
    for line, kind in expected.items():  # each reported as it is found, with its manifest line
        assert f"{manifest}:{line}: {kind}:" in err
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    counts = {k: list(expected.values()).count(k) for k in set(expected.values())}
    assert index["skipped"] == counts
    logged = [json.loads(x) for x in (tmp_path / "out" / "skipped.jsonl").read_text().splitlines()]
    assert [(b["line"], b["kind"]) for b in logged] == sorted(expected.items())
    assert check_shards(str(tmp_path / "out")) == []


def _samples(report):
    from qinyu_lit.data.schema import decode_sample
    from qinyu_lit.data.tar import iter_raw_samples

    return [decode_sample(raw) for raw in iter_raw_samples(report.shards)]


def test_closing_summary_counts_every_kind(bad_manifest, tmp_path, demo_dir, capsys):
    manifest, expected = bad_manifest
    build(
        manifest=str(manifest),
        out=str(tmp_path / "out"),
        tokenizer=str(demo_dir / "tokenizer"),
        codec=MIMI,
        progress=False,
        max_audio_seconds=2.0,
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"skipped {len(expected)} rows: ")
    for kind in set(expected.values()):
        assert f"{kind} {list(expected.values()).count(kind)}" in last


def test_strict_stops_at_the_first_bad_row(bad_manifest):
    manifest, expected = bad_manifest
    with pytest.raises(
        BadRowError, match=f"{manifest}:2: missing_audio: sample 'b1': .*nowhere.wav does not exist"
    ):
        scan_manifest(manifest, strict=True)


def test_strict_failure_while_building_keeps_finished_shards(tmp_path, demo_dir):
    """A row that fails only when decoded, in the third shard: shards 0-1 stay, and a later
    non-strict run resumes them instead of rebuilding."""
    root = tmp_path / "corpus"
    root.mkdir()
    np.save(root / "agent.npy", np.ones(16, np.float32))
    sf.write(root / "nan.wav", np.full(4000, np.nan, np.float32), 16000, subtype="FLOAT")
    rows = [_good(i, root) for i in range(6)]
    rows.insert(
        4,
        {
            "key": "broken",
            "task": "sqa",
            "turns": [{"role": "user", "audio": "nan.wav"}, {"role": "assistant", "text": "x"}],
        },
    )
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = dict(
        manifest=str(manifest),
        out=str(tmp_path / "out"),
        tokenizer=str(demo_dir / "tokenizer"),
        codec=MIMI,
        samples_per_shard=2,
        progress=False,
    )
    with pytest.raises(BadRowError, match=f"{manifest}:5: unreadable_audio: sample 'broken'"):
        build(**args, strict=True)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    report = build(**args)
    assert (report.resumed, report.built, report.samples) == (2, 2, 6)
    assert all((out / name).read_bytes() == data for name, data in before.items())
    assert [(b.line, b.kind) for b in report.skipped] == [(5, "unreadable_audio")]
