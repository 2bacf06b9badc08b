"""What ``train_dataloader`` returns: a DataLoader over a ``ShardStream`` plus the duties of a whole epoch.

* Equal batch counts: ranks hold the same number of *samples* (to one), but packs and the last
  partial batch differ; an uneven rank hangs DDP. Before each batch the ranks agree (one tiny
  all-reduce) whether all still have one; the first rank to run out ends the epoch for all. The
  batches the others had left are dropped, counted (``data/dropped_to_balance``) and summed up in
  one line per epoch.
* Counts no batch carried: a worker's counts travel with its batches; what it skipped after its
  last batch comes in an end-of-slot record, merged into the batch held back for it (or, when the
  epoch has no batch left, into the next epoch's first batch).
* An epoch that lost every sample stops the run with one line that says why (too long for
  ``pack_length``, or bad data, and the first problem), instead of starting empty epochs forever.
* Epoch and resume: sets the epoch and the resume positions on the stream before its workers start
  (they receive a copy of it).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .dist import all_gather_objects, cpu_group, rank_and_world
from .errors import QinYuError
from .layout import is_rejected_key
from .stream import ShardStream


def _add(into: dict, counts: dict) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + int(v)


class StreamLoader:
    """Iterates a ``ShardStream`` through a DataLoader (``batch_size=None``), one epoch per ``iter``.

    Args:
        stream: the stream; its ``epoch``, ``rank``, ``world_size`` and ``resume`` are set here.
        num_workers: DataLoader worker processes.
        owner: the ``QinYuDataModule`` that keeps the epoch and the resume position (training only).
        equalize: end the epoch on every rank when one runs out (training under DDP).
    """

    def __init__(self, stream: ShardStream, num_workers: int, owner=None, equalize: bool = True):
        self.stream, self.num_workers, self.owner, self.equalize = stream, num_workers, owner, equalize
        self.dropped_batches = 0
        self.dropped_keys: list[str] = []
        self.pending_counts: dict[str, int] = {}  # counts for the next batch (no batch was left to carry them)

    def _set_position(self, rank: int, world: int) -> None:
        s = self.stream
        s.rank, s.world_size, s.end_markers = rank, world, True
        nw = max(self.num_workers, 1)
        if self.owner is None:
            return
        st = self.owner._resume_state
        s.epoch = self.owner.epoch
        s.resume, s.rotation = {}, 0
        if st and st.get("epoch") == s.epoch:
            if (st["world_size"], st["num_workers"]) != (world, nw):
                raise ValueError(
                    f"the checkpoint's data position was saved with world size {st['world_size']} x "
                    f"{st['num_workers']} workers, this run has {world} x {nw}: set data.num_workers="
                    f"{st['num_workers']} and the same number of devices to resume mid-epoch"
                )
            s.resume = {int(k): v for k, v in st["slots"].items()}
            s.rotation = int(st["next_worker"].get(str(rank), 0))
        self.owner._resume_state = None

    def __iter__(self):
        rank, world = rank_and_world()
        self._set_position(rank, world)
        loader = DataLoader(
            self.stream, batch_size=None, num_workers=self.num_workers, persistent_workers=False, pin_memory=False
        )
        epoch = {"batches": 0, "lost": {}, "shortest_overlong": None, "first_problem": None, "balanced": 0}
        it = self._batches(iter(loader), epoch)
        while True:
            batch = next(it, None)
            if self.equalize and world > 1:
                flag = torch.tensor([0 if batch is None else 1])
                dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=cpu_group())
                if int(flag) == 0:
                    epoch["balanced"] = self._drop_rest(batch, it, rank, world)
                    break
            if batch is None:
                break
            epoch["batches"] += 1
            yield batch
        del it
        # reached only when the epoch ran out (an early stop closes the generator at ``yield``)
        if self.owner is not None:
            self._stop_if_all_lost(epoch)
            self.owner.epoch += 1

    def _batches(self, items: Iterator[dict], epoch: dict) -> Iterator[dict]:
        """The real batches, one held back so that a worker's end-of-slot counts can join it."""
        held = None
        for item in items:
            if item.get("end_of_slot"):
                _add(held["data_stats"] if held is not None else self.pending_counts, item["data_stats"])
                _add(epoch["lost"], item["data_stats"])
                n = item["shortest_overlong"]
                if n is not None and (epoch["shortest_overlong"] or n) >= n:
                    epoch["shortest_overlong"] = n
                epoch["first_problem"] = epoch["first_problem"] or item["first_problem"]
                continue
            if self.pending_counts:
                _add(item.setdefault("data_stats", {}), self.pending_counts)
                self.pending_counts = {}
            if held is not None:
                yield held
            held = item
        if held is not None:
            yield held

    def _drop_rest(self, batch, it, rank: int, world: int) -> int:
        """Drop this rank's remaining batches (another rank ran out); returns the samples dropped."""
        dropped = [batch] if batch is not None else []
        dropped += list(it)
        keys = [k for b in dropped for row in b["keys"] for k in row if not is_rejected_key(k)]  # a pair: once
        self.dropped_batches += len(dropped)
        self.dropped_keys += keys
        for b in dropped:  # their skip counts still count; the samples themselves count as dropped
            _add(self.pending_counts, b.get("data_stats", {}))
        if keys:
            self.pending_counts["dropped_to_balance"] = self.pending_counts.get("dropped_to_balance", 0) + len(keys)
        total = torch.tensor([len(dropped), len(keys)])
        dist.all_reduce(total, group=cpu_group())  # every rank is here: one summary line, on rank 0
        if rank == 0 and int(total[1]):
            print(
                f"[qinyu-lit] end of epoch {self.stream.epoch}: {int(total[1])} samples ({int(total[0])} batches) "
                f"over {world} ranks were dropped so that every rank runs the same number of steps "
                "(data/dropped_to_balance; they are read again next epoch)"
            )
        return len(keys)

    def _stop_if_all_lost(self, epoch: dict) -> None:
        """No batch in a whole epoch on any rank: every sample was lost. Say why, the same on every rank."""
        everyone = all_gather_objects(epoch) if self.equalize else [epoch]
        if sum(e["batches"] for e in everyone) > 0:
            return
        lost: dict = {}
        for e in everyone:
            _add(lost, e["lost"])
        shortest = min((e["shortest_overlong"] for e in everyone if e["shortest_overlong"]), default=None)
        problem = next((e["first_problem"] for e in everyone if e["first_problem"]), None)
        why = []
        if lost.get("dropped_overlong"):
            why.append(
                f"{lost['dropped_overlong']} dropped as overlong (data.pack_length {self.stream.pack_length} < shortest "
                f"sample {shortest} tokens: raise data.pack_length or set data.overlong truncate)"
            )
        if lost.get("skipped"):
            why.append(f"{lost['skipped']} skipped as bad data (the first: {problem})")
        balanced = sum(e["balanced"] for e in everyone)
        if balanced:
            why.append(f"{balanced} dropped to keep the ranks level (a rank had no batch: more data or a smaller data.batch_size)")
        raise QinYuError(
            f"every sample of epoch {self.stream.epoch} was lost, nothing to train on: "
            + ("; ".join(why) or "no sample was read")
        )
