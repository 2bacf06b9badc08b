"""What a run leaves when it stops early: Ctrl-C keeps the work, a run that never stepped leaves nothing.

``KeepWorkOnInterrupt`` does what Lightning's ``OnExceptionCheckpoint`` does, narrowed to what a user means by
it, on Lightning's own ``on_exception`` hook. It is not a subclass on purpose: Lightning turns every ``fit``
into ``fit(ckpt_path="last")`` when an ``OnExceptionCheckpoint`` is present, so a recipe rerun would silently
resume (or crash on an older run's shapes) instead of starting the run it describes.

* Ctrl-C (``KeyboardInterrupt``) after the first optimizer step saves ``DIRPATH/interrupted.ckpt``
  (the full trainer state: ``--ckpt_path last`` picks the newest of it and ``last.ckpt``,
  ``stages/resume.py``) and prints the command that resumes;
* any failure before the first step (a typo, missing data, a shape mismatch) removes the logger's
  new ``runs/NAME/version_N`` folder, which would otherwise hold only a config.yaml and bump the
  next run's version number;
* other exceptions save nothing (a NaN or a crash mid-step is not a state to resume from; the
  periodic ``last.ckpt`` is).

The shipped recipes put it next to their ``ModelCheckpoint``, with the same ``dirpath``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from lightning.pytorch.callbacks import Callback

# what a logger folder holds before a first step: LightningCLI's config.yaml, hparams, an empty event file
_EMPTY_RUN_FILES = ("config.yaml", "hparams.yaml", "events.out.tfevents")


class KeepWorkOnInterrupt(Callback):
    """Save ``dirpath/interrupted.ckpt`` on Ctrl-C and print the resume command; clean up a run that never stepped.

    Args:
        dirpath: the folder of the recipe's ``ModelCheckpoint`` (so ``--ckpt_path last`` finds the file).
        filename: the checkpoint's name, without ``.ckpt``.
    """

    def __init__(self, dirpath: str, filename: str = "interrupted") -> None:
        self.dirpath, self.filename = Path(dirpath), filename

    @property
    def ckpt_path(self) -> str:
        return str(self.dirpath / f"{self.filename}.ckpt")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.global_step == 0:
            if trainer.is_global_zero:
                _remove_empty_run(trainer)
            return
        if not isinstance(exception, KeyboardInterrupt):
            return
        trainer.save_checkpoint(self.ckpt_path)
        if trainer.is_global_zero:
            print(
                f"\n[qinyu-lit] interrupted at step {trainer.global_step}: saved {self.ckpt_path}; resume with\n"
                f"  qinyu-lit {_command_line()} --ckpt_path last",
                file=sys.stderr,
            )


def _command_line() -> str:
    """This run's ``qinyu-lit`` arguments without its own ``--ckpt_path`` (shell-quoted), to rerun it."""
    import shlex

    args, out = sys.argv[1:], []
    if not args or args[0] not in ("fit", "--config", "-c"):  # not started as `qinyu-lit fit` (a notebook, a test)
        return "fit --config RECIPE [your overrides]"
    skip = False
    for arg in args:
        if skip or arg.startswith("--ckpt_path="):
            skip = False
            continue
        skip = arg == "--ckpt_path"
        if not skip:
            out.append(arg)
    return shlex.join(out)


def _remove_empty_run(trainer) -> None:
    """Delete the logger's ``version_N`` folder when it holds nothing but what a start writes."""
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if not log_dir or not Path(log_dir).is_dir():
            continue
        files = [p for p in Path(log_dir).rglob("*") if p.is_file()]
        if all(p.name.startswith(_EMPTY_RUN_FILES) for p in files):
            if hasattr(logger, "finalize"):
                logger.finalize("failed")  # close the event file before removing its folder
            shutil.rmtree(log_dir, ignore_errors=True)
