"""Checkpoint files under faults: divergence, a kill mid-write, unwritable and full disks, skipped steps.

* Weights that went NaN are never written (an absurd learning rate makes them so); the last good
  checkpoint is kept and named in the NaN guard's message.
* The checkpoint is staged beside its target, not in ``$TMPDIR``: Lightning's stock
  ``TorchCheckpointIO`` stages it in ``$TMPDIR`` (fsspec's transaction), so with ``$TMPDIR`` on
  another file system its final "rename" is a copy over the previous file, and a kill during that
  copy destroys it. The same crash with ``AtomicCheckpointIO`` leaves the previous file intact.
* Disk errors name the directory and the cause in one line, a full disk too (torch's zip writer hides
  its ``OSError`` behind ``RuntimeError: ... unexpected pos``; the test writes into /dev/full).
* Leftover ``.partial`` files are removed at start; ``--ckpt_path last`` without a complete
  ``last.ckpt`` resumes from the newest complete checkpoint and says which.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from qinyu_lit.stages import SFTStage
from qinyu_lit.stages.resume import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    SampleLedger,
    explain_missing_last,
)
from tests.stages.helpers import demo_data


def _other_fs_tmpdir(tmp_path):
    """A $TMPDIR on another file system than ``tmp_path`` (/dev/shm is tmpfs), or skip."""
    shm = "/dev/shm"
    if not os.path.isdir(shm) or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system for $TMPDIR")
    return tempfile.mkdtemp(dir=shm)


@pytest.mark.parametrize("io_cls", [AtomicCheckpointIO, pytest.param(TorchCheckpointIO, marks=pytest.mark.xfail(
    strict=True, reason="Lightning's stock writer copies from $TMPDIR over the previous file"))])  # fmt: skip
def test_kill_during_save_keeps_previous_checkpoint(io_cls, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", _other_fs_tmpdir(tmp_path))
    io = io_cls()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)

    def killed_mid_copy(src, dst, *a, **k):  # what a SIGKILL during the copy leaves: half a file at dst
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read()[:100])
        raise OSError("killed mid-copy")

    def killed_mid_write(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError("killed mid-write")

    real_save = torch.save
    monkeypatch.setattr(shutil, "copyfile", killed_mid_copy)
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (
        real_save(obj, f, *a, **k) if not isinstance(f, (str, os.PathLike)) and hasattr(f, "getvalue")
        else killed_mid_write(obj, f)))  # fmt: skip
    with pytest.raises(OSError, match="killed mid-"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no partial file left behind


def test_checkpoint_is_not_staged_in_tmpdir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmpdir"))  # a full/missing $TMPDIR
    with pytest.raises(OSError):
        TorchCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "stock.ckpt")  # Lightning needs it
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, tmp_path / "ours.ckpt")
    assert torch.load(tmp_path / "ours.ckpt", weights_only=True)["w"].sum() == 3


def test_unwritable_directory_is_named_with_its_cause(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the checkpoint directory should be")
    with pytest.raises(CheckpointWriteError) as e:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, blocker / "ckpt" / "last.ckpt")
    msg = str(e.value)
    assert "\n" not in msg and str(blocker / "ckpt") in msg and ("Not a directory" in msg or "File exists" in msg)


def test_full_disk_is_named_with_its_cause(tmp_path):
    """A real ENOSPC from the kernel through torch's own zip writer (which turns it into ``RuntimeError:
    [enforce fail at inline_container.cc] unexpected pos``): the file being written is /dev/full."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    (tmp_path / "last.ckpt.partial").symlink_to("/dev/full")  # where AtomicCheckpointIO writes first
    with pytest.raises(RuntimeError, match="unexpected pos"):  # what the stock torch.save shows
        torch.save({"w": torch.ones(100_000)}, open(tmp_path / "last.ckpt.partial", "wb"))  # noqa: SIM115
    with pytest.raises(CheckpointWriteError) as e:
        AtomicCheckpointIO().save_checkpoint({"w": torch.ones(100_000)}, tmp_path / "last.ckpt")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "No space left on device" in msg
    assert e.value.errno == errno.ENOSPC and not list(tmp_path.iterdir())  # the partial file is gone too


class _WeightsGoNaN(L.Callback):
    """After optimizer step ``step`` a weight holds NaN, as after an update that overflowed (an absurd
    learning rate); runs before ModelCheckpoint (Lightning puts checkpoint callbacks last)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.model.code0_head.weight[0, 0] = float("nan")


@pytest.mark.usefixtures("one_thread")
def test_diverged_weights_are_never_checkpointed(demo_dir, tiny_net, tmp_path, capsys):
    stage = SFTStage(tiny_net, max_nonfinite_steps=3, val_generate=0)
    ckpt_dir = tmp_path / "ckpt"
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=8, logger=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, callbacks=[_WeightsGoNaN(step=2), ModelCheckpoint(
            dirpath=ckpt_dir, every_n_train_steps=1, save_last=True, save_top_k=-1)],
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="non-finite losses in a row") as e:
        trainer.fit(stage, datamodule=demo_data(demo_dir))
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["epoch=0-step=1.ckpt", "last.ckpt"]
    for name in ("epoch=0-step=1.ckpt", "last.ckpt"):
        ckpt = torch.load(ckpt_dir / name, weights_only=True)
        assert ckpt["global_step"] == 1
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert f"the last good checkpoint is {ckpt_dir / 'last.ckpt'}" in str(e.value)
    assert "NOT writing" in capsys.readouterr().out


def test_ledger_row_of_a_step_the_nan_guard_skipped(tmp_path, demo_dir, tiny_net):
    class Trainer:  # the attributes SampleLedger reads
        global_rank, global_step, current_epoch = 0, 3, 1

    stage = SFTStage(tiny_net)
    stage.skipped_step = True  # what optimizer_step sets when it skips; the step returned a zero loss
    ledger = SampleLedger(str(tmp_path / "ledger.jsonl"))
    ledger.on_train_batch_end(Trainer(), stage, {"loss": torch.tensor(0.0)}, {"keys": [["a", "b"]]}, 0)
    stage.skipped_step = False
    ledger.on_train_batch_end(Trainer(), stage, {"loss": torch.tensor(2.5)}, {"keys": [["c"]]}, 1)
    assert (tmp_path / "ledger.jsonl").read_text() == (
        '{"step": 3, "epoch": 1, "loss": 0.0, "skipped": true, "keys": ["a", "b"]}\n'
        '{"step": 3, "epoch": 1, "loss": 2.5, "skipped": false, "keys": ["c"]}\n'
    )


def test_leftovers_are_cleaned_and_last_falls_back_to_the_newest_complete_checkpoint(tmp_path, capsys):
    """What a kill during the first ``last.ckpt`` write leaves: complete step checkpoints, ``.partial``
    files (one under a name the next run will never write again). ``--ckpt_path last`` resumes from
    the newest complete one and says so; the leftovers are removed before the run starts."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for step in (2, 3):
        AtomicCheckpointIO().save_checkpoint({"global_step": step}, ckpt / f"epoch=0-step={step}.ckpt")
        os.utime(ckpt / f"epoch=0-step={step}.ckpt", (step, step))  # step 3 is the newer file
    (ckpt / "last.ckpt.partial").write_bytes(b"PK\x03\x04 half a zip")
    (ckpt / "epoch=0-step=4.ckpt.partial").write_bytes(b"half")
    trainer = L.Trainer(logger=False, callbacks=[ModelCheckpoint(dirpath=ckpt, save_last=True)])
    assert explain_missing_last(trainer, "last") == str(ckpt / "epoch=0-step=3.ckpt")
    out = capsys.readouterr().out
    assert "removed 2 unfinished checkpoint file(s)" in out and "resuming from the newest complete checkpoint" in out
    assert sorted(p.name for p in ckpt.iterdir()) == ["epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt"]
    (ckpt / "last.ckpt").write_bytes(b"PK\x03\x04 cut by the stock writer")  # a last.ckpt that is not whole
    assert explain_missing_last(trainer, "last") == str(ckpt / "epoch=0-step=3.ckpt")
    AtomicCheckpointIO().save_checkpoint({"global_step": 4}, ckpt / "last.ckpt")
    assert explain_missing_last(trainer, "last") == str(ckpt / "last.ckpt")  # a complete last.ckpt
    # Ctrl-C's interrupted.ckpt, newer than last.ckpt, is the latest state: resumed from it
    from qinyu_lit.stages.interrupt import KeepWorkOnInterrupt

    AtomicCheckpointIO().save_checkpoint({"global_step": 5}, ckpt / "interrupted.ckpt")
    os.utime(ckpt / "last.ckpt", (4, 4))
    with_interrupt = L.Trainer(logger=False, callbacks=[ModelCheckpoint(dirpath=ckpt, save_last=True), KeepWorkOnInterrupt(ckpt)])
    assert explain_missing_last(with_interrupt, "last") == str(ckpt / "interrupted.ckpt")
    assert explain_missing_last(trainer, None) is None
