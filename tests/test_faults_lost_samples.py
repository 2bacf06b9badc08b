"""Round 2 of the data faults: no sample is lost without a count and a line, and a run that can
train on nothing stops with one line instead of looping over empty epochs.

* every sample dropped (too long for ``pack_length``, or bad) -> one ``qinyu-lit: error`` line, exit 2;
* a speaker vector of another size -> the sample is skipped, counted and named (strict: fails);
* a shard ``index.json`` lists but the folder lacks -> warned at start, its samples counted (strict: refuses);
* a zero-byte shard -> its samples counted although the worker had no batch left to carry them;
  without an index it is warned about at start (strict: fails);
* a resumed chunk's skips are not counted twice; a truncation that leaves no target is dropped, counted.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import webdataset as wds

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.data.errors import DataError, DataWarning, QinYuError
from qinyu_lit.data.packing import fit_length
from qinyu_lit.data.schema import decode_sample, encode_sample
from qinyu_lit.prep.demo import demo_samples
from qinyu_lit.prep.writer import write_shard

from .test_cli_errors import _error, _fit_args


def _dm(train, demo_dir, **kw) -> QinYuDataModule:
    kw = {"batch_size": 2, "shuffle_buffer": 0, **kw}
    dm = QinYuDataModule(train=str(train), tokenizer=str(demo_dir / "tokenizer"), codebook_size=64, **kw)
    dm.prepare_data()
    return dm


def _epoch(dm) -> tuple[list[str], dict, list[str]]:
    """(keys, summed data_stats, warning lines) of one training epoch."""
    keys, stats = [], {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for batch in dm.train_dataloader():
            keys += [k for row in batch["keys"] for k in row]
            for k, v in batch["data_stats"].items():
                stats[k] = stats.get(k, 0) + v
    return keys, stats, [str(w.message) for w in caught if w.category is DataWarning]


def test_every_sample_too_long_stops_the_fit_with_one_line(demo_dir, capsys):
    args = _fit_args(str(demo_dir / "train"), str(demo_dir / "tokenizer"), "--trainer.max_steps", "20",
                     "--data.init_args.pack_length", "8", "--data.init_args.overlong", "drop")  # fmt: skip
    line = _error(capsys, *args)
    total = json.loads((demo_dir / "train" / "index.json").read_text())["totals"]["samples"]
    assert "every sample of epoch 0 was lost" in line and f"{total} dropped as overlong" in line
    assert "data.pack_length 8 < shortest sample" in line


def test_every_sample_bad_stops_after_a_bounded_number_of_warnings(demo_dir, tmp_path):
    raws = [encode_sample(s) for s in demo_samples("text", 30, 5, 16, 8, 64)]
    for raw in raws:
        raw["json"] = b"{not json"
    with wds.TarWriter(str(tmp_path / "garbled.tar"), mtime=0) as sink:
        for raw in raws:
            sink.write(raw)
    dm = _dm(tmp_path / "garbled.tar", demo_dir)
    with pytest.raises(QinYuError, match=r"every sample of epoch 0 was lost.*30 skipped as bad data \(the first: .*garbled\.tar"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            list(dm.train_dataloader())
    shown = [w for w in caught if w.category is DataWarning]
    assert len(shown) == 20 and "further bad samples are counted" in str(shown[-1].message)


def test_a_speaker_vector_of_another_size_is_skipped_counted_and_named(demo_dir, tmp_path):
    good = list(demo_samples("tts", 3, 1, 16, 8, 64))
    odd = list(demo_samples("tts", 1, 2, 12, 8, 64))[0]  # 12-d agent voice among 16-d ones
    odd.key = "odd-speaker"
    write_shard(good[:2] + [odd] + good[2:], tmp_path / "s" / "shard-000000.tar")
    keys, stats, shown = _epoch(_dm(tmp_path / "s", demo_dir))
    assert sorted(keys) == sorted(s.key for s in good) and stats["skipped"] == 1
    assert len(shown) == 1 and "'odd-speaker'" in shown[0] and "field speaker" in shown[0] and "12 dimensions" in shown[0]
    with pytest.raises(DataError, match="odd-speaker"):
        _epoch(_dm(tmp_path / "s", demo_dir, strict=True))


def test_a_shard_listed_in_the_index_but_missing_is_warned_and_counted(demo_dir, tmp_path):
    folder = tmp_path / "train"
    shutil.copytree(demo_dir / "train", folder)
    index = {e["path"]: e["samples"] for e in json.loads((folder / "index.json").read_text())["shards"]}
    gone = sorted(folder.glob("*.tar"))[1]
    gone.unlink()
    with pytest.warns(DataWarning, match=rf"lists 1 shard\(s\) missing.*{gone.name}.*their {index[gone.name]} samples"):
        dm = _dm(folder, demo_dir)
    keys, stats, _ = _epoch(dm)
    assert len(keys) == sum(index.values()) - index[gone.name] and stats["skipped"] == index[gone.name]
    with pytest.raises(QinYuError, match=rf"{gone.name}.*strict mode"):
        _dm(folder, demo_dir, strict=True)


def test_a_zero_byte_shard_is_counted_at_the_workers_end_and_warned_without_an_index(demo_dir, tmp_path):
    folder = tmp_path / "train"
    shutil.copytree(demo_dir / "train", folder)
    index = {e["path"]: e["samples"] for e in json.loads((folder / "index.json").read_text())["shards"]}
    last = sorted(folder.glob("*.tar"))[-1]
    last.write_bytes(b"")  # read last: no batch of this worker follows the skips
    keys, stats, shown = _epoch(_dm(folder, demo_dir))
    assert stats["skipped"] == index[last.name] and len(keys) + stats["skipped"] == sum(index.values())
    assert any(last.name in m for m in shown)
    (folder / "index.json").unlink()
    with pytest.warns(DataWarning, match=rf"{last.name}: not a readable tar after 0 sample"):
        _dm(folder, demo_dir)
    with pytest.raises(DataError, match=last.name):
        _dm(folder, demo_dir, strict=True)


def test_a_resumed_chunk_does_not_count_its_skips_twice(demo_dir, tmp_path):
    raws = [encode_sample(s) for s in demo_samples("text", 8, 6, 16, 8, 64)]
    raws[1]["json"] = b"{not json"
    with wds.TarWriter(str(tmp_path / "one.tar"), mtime=0) as sink:
        for raw in raws:
            sink.write(raw)
    kw = {"batch_size": 1, "shuffle_buffer": 8}  # one chunk of 8 samples, one per batch
    dm = _dm(tmp_path / "one.tar", demo_dir, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = [(b["stream_state"], b["data_stats"]["skipped"]) for b in dm.train_dataloader()]
        assert sum(s for _, s in first) == 1 and first[0][1] == 1  # the chunk's first batch carries it
        resumed = _dm(tmp_path / "one.tar", demo_dir, **kw)
        state, _ = first[2]
        resumed.load_state_dict({"epoch": 0, "world_size": 1, "num_workers": 1, "slots": {"0": state},
                                 "next_worker": {"0": 0}})  # fmt: skip
        rest = [b["data_stats"]["skipped"] for b in resumed.train_dataloader()]
    assert len(rest) == len(first) - 3 and sum(rest) == 0


def test_a_truncation_that_leaves_no_target_is_dropped(demo_dir):
    dm = _dm(demo_dir / "train", demo_dir)
    sample = next(s for s in demo_samples("text", 4, 0, 16, 8, 64))
    seq = dm.layout.build(decode_sample(encode_sample(sample)))
    first_target = int(np.flatnonzero(seq.target_mask)[0])
    assert fit_length(seq, first_target, "truncate", dm.layout) is None  # cut before the answer
    kept = fit_length(seq, first_target + 1, "truncate", dm.layout)
    assert kept is not None and kept.num_targets == 1
