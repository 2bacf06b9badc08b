"""Surviving preemption: atomic checkpoint files and a per-step record of the samples trained on.

* ``AtomicCheckpointIO`` - writes ``<path>.partial`` next to the target and renames it over the
  old file (``os.replace`` is atomic on POSIX), so a kill during the write leaves the previous
  checkpoint usable. Lightning's ``TorchCheckpointIO`` builds the whole file in memory and stages it
  in ``$TMPDIR`` (fsspec's transaction): a full or small ``$TMPDIR`` fails with a bare ENOSPC, and a
  ``$TMPDIR`` on another file system turns the final rename into a copy over the old file. This one
  never touches ``$TMPDIR``, reports disk errors with the directory and the cause in one line, and
  refuses to write weights that hold NaN/inf (the last good checkpoint stays as it was).
  ``QinYuStage`` installs it automatically when the strategy uses the plain torch writer.
* ``SampleLedger`` - a callback writing one JSON line per training batch (step, loss, sample
  keys): the audit trail that shows which samples a run saw, and what the resume test compares.

The data stream's own position lives in ``QinYuDataModule.state_dict`` (see ``data/datamodule.py``).
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

from ..data.dist import all_gather_objects
from ..data.files import atomic_path


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the message names the directory and the cause."""


class _RecordingFile:
    """The file ``torch.save`` writes to, keeping the ``OSError`` of a failed write: torch's zip writer
    turns it into ``RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos``, which
    says nothing of a full disk."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.f.flush()


def nonfinite_tensors(state_dict: dict) -> list[str]:
    """Names of floating-point tensors in ``state_dict`` that hold NaN or inf."""
    return [
        k for k, v in state_dict.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]  # fmt: skip


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes ``<path>.partial`` beside the target and renames it into place
    (local paths), and refuses checkpoints whose weights are not finite.

    ``last_good`` is the newest checkpoint this writer completed (named by the NaN guard's message).
    """

    def __init__(self):
        super().__init__()
        self.last_good: str | None = None

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
        if bad:
            print(
                f"[qinyu-lit] NOT writing {path}: {len(bad)} weight tensor(s) hold NaN/inf (first: {bad[0]}); "
                f"the last good checkpoint is {self.last_good or 'none written by this run'}"
            )
            return
        fs = get_filesystem(path)
        if "file" not in fs.protocol:  # object stores replace whole objects already
            super().save_checkpoint(checkpoint, path, storage_options)
            self.last_good = str(path)
            return
        path = Path(path)
        sink = None
        try:
            with atomic_path(path) as partial, open(partial, "wb") as f:
                sink = _RecordingFile(f)
                torch.save(checkpoint, sink)  # streamed to disk: no copy of the checkpoint in memory or in $TMPDIR
                f.flush()
                os.fsync(f.fileno())
        except (OSError, RuntimeError) as caught:
            e = caught if isinstance(caught, OSError) else getattr(sink, "error", None)
            if e is None:
                raise  # a RuntimeError that is not a failed write
            raise CheckpointWriteError(
                e.errno, f"cannot write checkpoint {path.name} in {path.parent}: {e.strerror or e} "
                f"({type(e).__name__}); free space there or set the ModelCheckpoint dirpath to a writable directory"
            ) from caught
        self.last_good = str(path)


def last_good_hint(trainer) -> str:
    """Where to resume from after a divergence: the newest finite checkpoint, by path.

    A collective (every rank calls it, as the NaN guard does, all at once): only rank 0 writes
    checkpoints, so only it knows which one was the last good one; it tells the others, and every
    rank's stop message reads the same."""
    io = getattr(trainer.strategy, "checkpoint_io", None)
    path = getattr(io, "last_good", None)
    if path is None:
        cb = trainer.checkpoint_callback
        path = (cb.last_model_path or cb.best_model_path) if cb is not None and not isinstance(io, AtomicCheckpointIO) else None
    if trainer.world_size > 1:
        path = trainer.strategy.broadcast(path, src=0)
    if not path:
        return "no checkpoint was written by this run before it diverged"
    return f"the last good checkpoint is {path}: resume from it with --ckpt_path {path} and a lower learning rate"


def _complete(path: Path) -> bool:
    """A checkpoint file that was written to its end (torch checkpoints are zip files: a cut one has no
    central directory). Cheap: reads the file's tail, not the tensors."""
    return path.is_file() and zipfile.is_zipfile(path)


def _clean_partials(dirs: list[Path], is_zero: bool) -> None:
    """Remove ``*.partial`` files a killed run left in this run's checkpoint directories (the next
    run may save under other names and never overwrite them)."""
    stale = [p for d in dirs if d.is_dir() for p in d.glob("*.partial")]
    for p in stale:
        p.unlink(missing_ok=True)
    if stale and is_zero:
        print(f"[qinyu-lit] removed {len(stale)} unfinished checkpoint file(s) a killed run left: "
              + ", ".join(str(p) for p in stale[:3]))  # fmt: skip


def explain_missing_last(trainer, ckpt_path):
    """Before ``fit``: clean this run's unfinished checkpoint files, and resolve ``--ckpt_path last``.

    Returns the ``ckpt_path`` to use. ``last`` with no complete ``last.ckpt`` (a kill during the first
    one's write) but complete step checkpoints in the same directory resumes from the newest of those,
    and says which. With nothing to resume from it says where it looked and why (Lightning's own
    warning blames ``save_last`` even where it is set; the usual cause is a callback without ``dirpath``)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    cbs = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    dirs = [Path(cb.dirpath) for cb in cbs if cb.dirpath]
    _clean_partials(dirs, trainer.is_global_zero)
    if ckpt_path != "last":
        return ckpt_path
    lasts = [Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}" for cb in cbs if cb.dirpath and cb.save_last]
    # Ctrl-C's interrupted.ckpt (stages/interrupt.py) and last.ckpt: the newer of the two holds the latest state
    interrupted = [Path(cb.ckpt_path) for cb in trainer.callbacks if type(cb).__name__ == "KeepWorkOnInterrupt"]
    newest = sorted((p for p in lasts + interrupted if _complete(p)), key=lambda p: p.stat().st_mtime)
    if newest:
        if trainer.is_global_zero and newest[-1] not in lasts:
            print(f"[qinyu-lit] --ckpt_path last: resuming from {newest[-1]} (newer than any last.ckpt)")
        return str(newest[-1])
    saved = sorted((p for d in dirs if d.is_dir() for p in d.glob("*.ckpt") if _complete(p)), key=lambda p: p.stat().st_mtime)
    if saved:
        if trainer.is_global_zero:
            print(f"[qinyu-lit] --ckpt_path last: no complete {' or '.join(map(str, lasts)) or 'last.ckpt'} (a run killed "
                  f"while writing it); resuming from the newest complete checkpoint, {saved[-1]}")  # fmt: skip
        return str(saved[-1])
    if not any(cb.save_last for cb in cbs):
        why = "no ModelCheckpoint callback has save_last: true"
    elif any(cb.dirpath is None for cb in cbs if cb.save_last):
        why = ("the ModelCheckpoint with save_last has no dirpath, so it writes into the logger's new version_N "
               "folder and never finds an earlier run's last.ckpt; give it a fixed dirpath (the shipped recipes do)")
    else:
        why = f"no {' or '.join(map(str, lasts))} yet (a first run)"
    if trainer.is_global_zero:
        print(f"[qinyu-lit] --ckpt_path last: nothing to resume from, training starts from step 0: {why}")
    warnings.filterwarnings("ignore", message=r".*there is no last checkpoint available")  # said better above
    return ckpt_path


def gather_counts(counts: dict) -> dict:
    """Every rank's cumulative data counters, for the checkpoint (a collective: all ranks call it)."""
    return {"ranks": all_gather_objects(dict(counts))}


def restore_counts(saved: dict, rank: int, world_size: int) -> dict:
    """This rank's counters from a checkpoint; with another world size rank 0 takes the totals."""
    ranks = saved.get("ranks", [])
    if len(ranks) == world_size:
        return dict(ranks[rank])
    if rank != 0:
        return {}
    total: dict = {}
    for r in ranks:
        for k, v in r.items():
            total[k] = total.get(k, 0) + v
    return total


class SampleLedger(L.Callback):
    """One JSON line per training batch: ``{"step", "epoch", "loss", "skipped", "keys"}`` (``skipped``: the
    optimizer step was skipped by the NaN guard).

    Args:
        path: the file (rank ``r`` > 0 writes ``<path>.rank<r>``); appended to, so a resumed
            run continues the same ledger.
    """

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # a step the NaN guard skipped still returned a (zero) loss: ``skipped_step`` tells it apart
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        rank = trainer.global_rank
        path = self.path if rank == 0 else f"{self.path}.rank{rank}"
        row = {
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "loss": None if loss is None else float(loss),
            "skipped": bool(getattr(pl_module, "skipped_step", False)),
            "keys": [k for row in batch.get("keys", []) for k in row],
        }
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
