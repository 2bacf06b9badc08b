"""Test helper (imported by the ``qinyu-lit fit`` subprocesses of tests/test_faults_ddp.py)."""

import lightning as L


class NaNOnRank(L.Callback):
    """On rank ``rank`` only, the input embeddings of training step ``step`` + 1 are NaN, so that rank's loss
    is NaN and the others' is not. (The shard validator rejects NaN in every float member, so a poisoned
    shard cannot carry it; a forward hook does.)"""

    def __init__(self, step: int, rank: int):
        self.step, self.rank, self.handle = step, rank, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            embed = pl_module.model.backbone.get_input_embeddings()
            self.handle = embed.register_forward_hook(lambda module, args, out: out * float("nan"))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class RecordException(L.Callback):
    """Writes the exception that stopped the run to ``<path>.rank<r>``: each rank's stop message."""

    def __init__(self, path: str):
        self.path = path

    def on_exception(self, trainer, pl_module, exception) -> None:
        with open(f"{self.path}.rank{trainer.global_rank}", "w") as f:
            f.write(str(exception))
