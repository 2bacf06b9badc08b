"""Bad data never hangs a run and is never skipped silently.

A truncated tar, a garbled JSON member and an undecodable FLAC are each skipped with a
``DataWarning`` naming the shard and the sample key, and counted in the batches'
``data_stats`` (which the stage logs to TensorBoard as ``data/skipped``). ``strict`` fails
on the first one. A missing shard or an empty source fails at start, before any worker runs.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.data.schema import encode_sample
from qinyu_lit.data.stream import DataError, DataWarning
from qinyu_lit.prep.demo import demo_samples


def _write(path: Path, raws: list[dict]) -> None:
    with wds.TarWriter(str(path), mtime=0) as sink:
        for raw in raws:
            sink.write(raw)


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    good = [encode_sample(s) for s in demo_samples("sqa", 6, 3, 16, 8, 64)]  # user speech: FLAC members
    _write(root / "a-good.tar", good[:2])
    garbled = [dict(good[2]), good[3]]
    garbled[0]["json"] = b"{not json"
    _write(root / "b-garbled.tar", garbled)
    bad_flac = [good[4], dict(good[5])]
    bad_flac[1]["turn0.flac"] = b"fLaC" + b"\x00" * 40
    _write(root / "c-flac.tar", bad_flac)
    # truncated: the second sample's members are cut off mid-data
    _write(root / "d-truncated.tar", [encode_sample(s) for s in demo_samples("text", 2, 4, 16, 8, 64)])
    full = (root / "d-truncated.tar").read_bytes()
    with tarfile.open(root / "d-truncated.tar") as tar:
        second = [m for m in tar.getmembers() if m.name.startswith("text0400001")][0]
    (root / "d-truncated.tar").write_bytes(full[: second.offset_data + 5])
    expected_keys = {
        good[0]["__key__"],
        good[1]["__key__"],
        good[3]["__key__"],
        good[4]["__key__"],
        "text0400000",
    }
    return (
        root,
        expected_keys,
        {
            "b-garbled.tar": good[2]["__key__"],
            "c-flac.tar": good[5]["__key__"],
            "d-truncated.tar": "text0400001",
        },
    )


def _module(root, demo_dir, **kw) -> QinYuDataModule:
    dm = QinYuDataModule(
        train=str(root),
        tokenizer=str(demo_dir / "tokenizer"),
        codebook_size=64,
        batch_size=2,
        shuffle_buffer=0,
        **kw,
    )
    dm.prepare_data()
    return dm


def test_bad_samples_are_skipped_named_and_counted(bad_corpus, demo_dir):
    root, expected, culprits = bad_corpus
    dm = _module(root, demo_dir)
    keys, skipped = [], 0
    with pytest.warns(DataWarning) as record:
        for batch in dm.train_dataloader():
            keys += [k for row in batch["keys"] for k in row]
            skipped += batch["data_stats"]["skipped"]
    assert set(keys) == expected and len(keys) == len(expected)
    assert skipped == 3
    messages = [str(w.message) for w in record if w.category is DataWarning]
    assert len(messages) == 3
    for shard, key in culprits.items():
        assert any(shard in m and key in m for m in messages), (
            f"no warning names {shard} and {key}: {messages}"
        )
    assert any("rest of this shard" in m for m in messages if "d-truncated" in m)


def test_strict_mode_fails_fast(bad_corpus, demo_dir):
    root, _, _ = bad_corpus
    # without index.json the truncated shard's headers are scanned at start: strict stops there
    with pytest.raises(DataError, match=r"d-truncated\.tar: not a readable tar after 2 sample"):
        _module(root, demo_dir, strict=True)
    dm = _module(f"{root}/[abc]-*.tar", demo_dir, strict=True)
    with pytest.raises(DataError, match=r"b-garbled\.tar.*json"):
        for _ in dm.train_dataloader():
            pass


def test_missing_shard_and_empty_source_fail_at_start(bad_corpus, demo_dir, tmp_path):
    root, _, _ = bad_corpus
    with pytest.raises(FileNotFoundError, match="nope-000000.tar"):
        _module(f"{root}/nope-{{000000..000001}}.tar", demo_dir)
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty / "shard-000000.tar", [])
    with pytest.raises(ValueError, match="holds no samples"):
        QinYuDataModule(
            train=[{"path": str(root), "name": "ok"}, {"path": str(empty), "name": "void"}],
            tokenizer=str(demo_dir / "tokenizer"),
        ).prepare_data()


def test_nonfinite_loss_is_skipped_counted_then_stops(demo_dir, tiny_net):
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from qinyu_lit.stages import SFTStage

    nan_batches = {1} | set(range(4, 100))  # one isolated NaN step, then NaN for good

    class Poisoned(SFTStage):
        weights: dict[int, float] = {}

        def on_train_batch_start(self, batch, batch_idx):
            super().on_train_batch_start(batch, batch_idx)
            self.weights[batch_idx] = sum(float(p.double().sum()) for p in self.model.parameters())

        def training_step(self, batch, batch_idx):
            real = self.model.loss
            if batch_idx in nan_batches:

                def poisoned(b):
                    out = real(b)
                    out.loss = out.loss * float("nan")
                    return out

                self.model.loss = poisoned
            try:
                return super().training_step(batch, batch_idx)
            finally:
                self.model.loss = real

    dm = QinYuDataModule(
        train=str(demo_dir / "train"),
        tokenizer=str(demo_dir / "tokenizer"),
        codebook_size=64,
        batch_size=2,
        shuffle_buffer=0,
    )
    batches = [b for b in dm.train_dataloader()][:10]
    for b in batches:
        b.pop("stream_state")
    stage = Poisoned(tiny_net, max_nonfinite_steps=3)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=10,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(RuntimeError, match="3 non-finite losses in a row"):
        trainer.fit(stage, DataLoader(batches, batch_size=None))
    assert stage._data_counts["nonfinite_steps"] == 4
    w = Poisoned.weights
    assert w[0] != w[1] and w[1] == w[2], "batch 0 updated the weights, the NaN batch 1 did not"
    assert w[4] == w[5] == w[6]
    assert all(torch.isfinite(p).all() for p in stage.model.parameters())
