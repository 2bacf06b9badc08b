"""Truncated shards never lose samples silently.

Every writer records each shard's sample count in ``index.json`` (demo-data, persona-data,
``write_shard``). With the index, a shard cut at a member boundary - which still reads as a valid,
shorter tar - is warned about and every sample it lost is counted in ``data/skipped``. Without an
index the loader warns once that such losses cannot be detected.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import warnings

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.prep.demo import demo_samples
from qinyu_lit.prep.persona_data import make_demo_persona
from qinyu_lit.prep.writer import write_shard, write_shards


def _index(folder) -> dict[str, int]:
    return {e["path"]: e["samples"] for e in json.loads((folder / "index.json").read_text())["shards"]}


def _samples_in(shard) -> int:
    with tarfile.open(shard) as tar:
        return len({m.name.split(".")[0] for m in tar if m.isfile()})


def test_every_writer_records_the_index(demo_dir, tmp_path):
    for split in ("train", "val"):  # qinyu-lit demo-data
        folder = demo_dir / split
        assert _index(folder) == {p.name: _samples_in(p) for p in sorted(folder.glob("*.tar"))}
    samples = list(demo_samples("tts", 5, 1, 16, 8, 64))
    write_shard(samples[:2], tmp_path / "w" / "a.tar")  # one shard at a time: entries accumulate
    write_shard(samples[2:], tmp_path / "w" / "b.tar")
    doc = json.loads((tmp_path / "w" / "index.json").read_text())
    assert _index(tmp_path / "w") == {"a.tar": 2, "b.tar": 3} and doc["totals"]["samples"] == 5
    assert doc["codec"]["num_codebooks"] == 8 and doc["codec"]["codebook_size"] == 64
    write_shards(samples, tmp_path / "ws", samples_per_shard=2)
    assert _index(tmp_path / "ws") == {"shard-000000.tar": 2, "shard-000001.tar": 2, "shard-000002.tar": 1}


def test_persona_data_records_the_index(tmp_path):
    from qinyu_lit.prep.persona_data import DEMO_RULE, build_persona

    src = make_demo_persona(tmp_path / "src", dialogues=5)
    out = build_persona(src, tmp_path / "out", DEMO_RULE)
    assert sum(_index(out / "train").values()) == 5


def _cut_after(shard, keep: int) -> int:
    """Truncate ``shard`` at the member boundary after its first ``keep`` samples; returns how many it lost."""
    with tarfile.open(shard) as tar:
        members = [m for m in tar if m.isfile()]
    keys = list(dict.fromkeys(m.name.split(".")[0] for m in members))
    first_cut = next(m for m in members if m.name.split(".")[0] == keys[keep])
    with open(shard, "r+b") as f:
        f.truncate(first_cut.offset)
    return len(keys) - keep


def _read_all(folder, tokenizer) -> tuple[int, int, list[str]]:
    dm = QinYuDataModule(train=str(folder), tokenizer=str(tokenizer), codebook_size=64, batch_size=4,
                         num_workers=0, shuffle_buffer=0)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.prepare_data()
        read = skipped = 0
        for batch in dm.train_dataloader():
            read += sum(len(r) for r in batch["keys"])
            skipped += batch["data_stats"]["skipped"]
    return read, skipped, [f"{w.category.__name__}: {w.message}" for w in caught]


def test_truncated_shards_with_an_index_are_warned_and_counted(demo_dir, tmp_path):
    folder = tmp_path / "train"
    shutil.copytree(demo_dir / "train", folder)
    total = sum(_index(folder).values())
    shards = sorted(folder.glob("*.tar"))
    lost = _cut_after(shards[0], 3) + _cut_after(shards[-1], 1)
    assert _samples_in(shards[0]) == 3  # still a valid tar: nothing but the index can tell
    read, skipped, caught = _read_all(folder, demo_dir / "tokenizer")
    assert read + skipped == total and skipped == lost > 0
    for shard in (shards[0], shards[-1]):
        assert any(w.startswith("DataWarning") and str(shard) in w for w in caught), caught


def test_without_an_index_the_loader_warns_once_that_counts_are_unchecked(demo_dir, tmp_path):
    folder = tmp_path / "train"
    shutil.copytree(demo_dir / "train", folder)
    (folder / "index.json").unlink()
    shards = sorted(folder.glob("*.tar"))
    _cut_after(shards[0], 3)
    _, skipped, caught = _read_all(folder, demo_dir / "tokenizer")
    unchecked = [w for w in caught if w.startswith("UncheckedCountsWarning")]
    assert len(unchecked) == 1 and str(folder) in unchecked[0] and "cannot be detected" in unchecked[0]
    assert skipped == 0  # what the warning says: the loss is invisible without the index
    _, _, caught = _read_all(folder, demo_dir / "tokenizer")
    assert not [w for w in caught if w.startswith("UncheckedCountsWarning")]  # once per folder
