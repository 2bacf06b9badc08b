"""Streaming from shards to batches: the loader's whole path, one generator per step.

    epoch plan (mixture.Catalog) --slot range--> items (shard, offset), exactly once per slot
           --ShardReader-->                raw samples (tar members grouped by key; bad data skipped, counted)
           --decode_sample-->              validated Sample
           --TokenLayout.build-->          TokenSequence (tokenize, interleave, delay, placeholders)
           --chunk of ``window`` samples, seeded shuffle-->
           --pack (best-fit decreasing) or batch--> rows -> ``collate`` -> tensors

A preference pair (schema v2) is one item whose ``footprint`` is both its conversations: it is read,
counted, packed and resumed as one sample, and ``collate`` lays its two sequences side by side.

Everything runs in DataLoader workers on CPU (the codec never runs here: shards already
hold codes). Batching happens in the stream, not in ``__getitem__``, so a batch never
depends on which worker happened to hold which sample. The DataLoader is used with
``batch_size=None``.

Resume: the stream works chunk by chunk, and the only thing that crosses a chunk boundary
is the list of samples not yet shipped (``carried``). Each batch carries its position
``(epoch, slot, chunk, carried, batch)``; replaying that chunk from that position rebuilds
exactly the batches that follow, so a resumed run neither repeats nor skips a sample and
re-reads at most one chunk.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from .batch import collate
from .dist import rank_and_world
from .errors import DataError, DataWarning, bad_data  # noqa: F401 - DataError/DataWarning: part of this API
from .layout import TokenLayout, TokenSequence
from .mixture import Catalog, Source, interleave, slot_range
from .packing import best_fit_decreasing, fit_length, split_full
from .schema import CodecMismatch, SampleError, decode_sample
from .tar import TAR_ERRORS, ShardCursor


def worker_slot() -> tuple[int, int]:
    """(index, count) of this data-loader worker among all ranks x workers."""
    rank, world = rank_and_world()
    info = get_worker_info()
    wid, nworkers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * nworkers + wid, world * nworkers


# --------------------------------------------------------------------------- bad data


class ShardReader:
    """Random access to ``(shard, offset)`` items, cheap when offsets rise within each shard.

    Bad data never stops the stream and is never skipped silently: a sample that fails the
    schema is skipped with a ``DataWarning`` naming shard and key; a shard that cannot be read
    further (truncated tar, garbled header) warns once and every item planned after that point
    is skipped and counted. ``strict=True`` raises ``DataError`` instead. A sample whose speaker
    vectors do not have ``speaker_dim`` entries (the model's size; ``None``: the first sample's) is
    skipped the same way. After ``MAX_WARNINGS`` warnings the rest are counted, not shown.
    """

    MAX_WARNINGS = 20

    def __init__(
        self,
        shards: list[str],
        layout: TokenLayout,
        source_names: list[str],
        strict: bool = False,
        pack_length: int | None = None,
        overlong: str = "truncate",
        max_open: int = 8,
        speaker_dim: int | None = None,
    ):
        self.shards, self.layout, self.source_names = shards, layout, source_names
        self.speaker_dim = speaker_dim
        self.strict, self.pack_length, self.overlong, self.max_open = strict, pack_length, overlong, max_open
        self.cursors: dict[int, ShardCursor] = {}
        self.broken: dict[int, str] = {}
        self.stats = {"skipped": 0, "truncated": 0, "dropped_overlong": 0}
        self.shortest_overlong: int | None = None  # for the message when every sample was too long
        self.first_problem: str | None = None  # for the message when every sample was bad
        self.warned = 0

    def _bad(self, message: str) -> None:
        self.first_problem = self.first_problem or message
        self.warned += 1
        if self.strict or self.warned <= self.MAX_WARNINGS:
            if self.warned == self.MAX_WARNINGS:
                message += f" (warning {self.MAX_WARNINGS} of this data-loader worker: further bad samples are counted in data/skipped, not shown)"
            bad_data(message, self.strict, stacklevel=4)

    def _check_speakers(self, seq: TokenSequence, shard: str) -> str | None:
        """Why ``seq``'s speaker vectors do not fit the run's size, or ``None``. Checked here, per
        sample, so that a lenient run skips the sample rather than failing in the collate."""
        for vec in seq.speakers:
            if self.speaker_dim is None:
                self.speaker_dim = int(vec.shape[-1])  # no size given: the first sample's sets it
            if vec.shape[-1] != self.speaker_dim:
                return (
                    f"skipped sample: {shard}: sample {seq.key!r}: field speaker: a speaker vector of "
                    f"{vec.shape[-1]} dimensions, the run's have {self.speaker_dim} (rebuild it with the set's speaker encoder)"
                )
        return None

    def _cursor(self, k: int, offset: int) -> ShardCursor:
        cur = self.cursors.get(k)
        if cur is None or cur.next_offset > offset:
            if cur is not None:
                cur.close()
            cur = self.cursors[k] = ShardCursor(self.shards[k])
            while len(self.cursors) > self.max_open:  # dicts keep insertion order: close the oldest
                old = next(iter(self.cursors))
                self.cursors.pop(old).close()
        while cur.next_offset < offset:
            if cur.next_sample(read=False) is None:
                raise EOFError(f"shard ends after {cur.next_offset} samples, sample #{offset} was planned")
        return cur

    def get(self, k: int, offset: int, source: int) -> TokenSequence | None:
        """Build item ``(k, offset)``; ``None`` if it was skipped (and counted)."""
        shard = self.shards[k]
        if k in self.broken:
            self.stats["skipped"] += 1
            return None
        key = f"#{offset}"
        try:
            cur = self._cursor(k, offset)
            raw = cur.next_sample()
            if raw is None:
                raise EOFError(f"shard ends after {cur.next_offset} samples, sample #{offset} was planned")
            key = raw["__key__"]
        except TAR_ERRORS as e:
            cur = self.cursors.get(k)
            if cur is not None and cur.reading_key not in (None, cur.last_key):
                key = repr(cur.reading_key)
            after = cur.last_key if cur is not None else "<start of shard>"
            self.broken[k] = str(e)
            self.cursors.pop(k, None)
            self.stats["skipped"] += 1
            self._bad(
                f"{shard}: unreadable at sample {key} (after key {after!r}): {type(e).__name__}: {e}; "
                "skipping the rest of this shard"
            )
            return None
        try:
            seq = self.layout.build(decode_sample(raw, shard))
        except CodecMismatch:
            raise  # the whole shard set does not fit the model: stop, do not skip every sample
        except SampleError as e:
            self.stats["skipped"] += 1
            self._bad(f"skipped sample: {e}")
            return None
        except Exception as e:  # anything else a malformed sample can trigger; the run must go on
            self.stats["skipped"] += 1
            self._bad(f"skipped sample: {shard}: sample {key!r}: {type(e).__name__}: {e}")
            return None
        wrong_size = self._check_speakers(seq, shard)
        if wrong_size is not None:
            self.stats["skipped"] += 1
            self._bad(wrong_size)
            return None
        seq.source = self.source_names[source]
        if self.pack_length is not None and seq.footprint > self.pack_length:
            n = seq.footprint
            seq = fit_length(seq, self.pack_length, self.overlong, self.layout)
            self.stats["truncated" if seq is not None else "dropped_overlong"] += 1
            if seq is None:
                self.shortest_overlong = min(n, self.shortest_overlong or n)
        return seq

    def end_of_slot(self, sent: dict) -> dict:
        """What a worker yields after its last batch: the counts no batch carried yet (they would be
        lost otherwise) and what the loader needs to explain an epoch in which every sample was lost."""
        return {
            "end_of_slot": True,
            "data_stats": {k: v - sent[k] for k, v in self.stats.items()},
            "shortest_overlong": self.shortest_overlong,
            "first_problem": self.first_problem,
        }

    def close(self) -> None:
        for cur in self.cursors.values():
            cur.close()
        self.cursors.clear()


# --------------------------------------------------------------------------- the stream


class ShardStream(IterableDataset):
    """An iterable of collated batches read from WebDataset shards, exactly once per epoch.

    Args:
        shards: shard paths (each its own source) or a ``mixture.Catalog`` of weighted sources.
        layout: the ``TokenLayout`` that turns samples into token sequences.
        batch_size: rows per batch: sequences (unpacked, padded to the longest) or packs.
        shuffle_buffer: samples shuffled together (the chunk); 0 or 1 keeps shard order.
        seed: base seed; shard order and sample order depend on ``seed`` and the epoch only.
        pack_length: tokens per pack; ``None`` batches single sequences.
        window: samples the packer sees at once (at least ``shuffle_buffer``).
        min_fill: packs filled less than this wait for the next window (the last ones ship anyway).
        overlong: ``truncate`` or ``drop`` samples longer than ``pack_length``.
        mix_shards: shards a worker reads interleaved, so every batch mixes sources.
        strict: raise on bad data instead of skipping it with a warning.
        speaker_dim: the speaker vectors' size (the model's); a sample with another is skipped.

    Set by the main process before each iteration: ``epoch``, ``rank``, ``world_size``,
    ``resume`` ({slot: position}), ``rotation`` and ``end_markers`` (see ``loader.StreamLoader``).
    """

    def __init__(
        self,
        shards,
        layout: TokenLayout,
        batch_size: int = 4,
        shuffle_buffer: int = 0,
        seed: int = 0,
        pack_length: int | None = None,
        window: int = 256,
        min_fill: float = 0.99,
        overlong: str = "truncate",
        mix_shards: int = 4,
        strict: bool = False,
        speaker_dim: int | None = None,
    ):
        super().__init__()
        self.speaker_dim = speaker_dim
        self.catalog = shards if isinstance(shards, Catalog) else Catalog.build([Source(s) for s in shards])
        self.layout = layout
        self.batch_size, self.shuffle_buffer, self.seed = batch_size, shuffle_buffer, seed
        self.pack_length, self.min_fill, self.overlong = pack_length, min_fill, overlong
        self.window = max(window if pack_length else batch_size, shuffle_buffer, 1)
        self.mix_shards, self.strict = mix_shards, strict
        self.epoch, self.rank, self.world_size, self.rotation = 0, None, None, 0
        self.resume: dict[int, dict] = {}
        self.end_markers = False  # yield an end-of-slot record after the last batch (StreamLoader sets it)

    @property
    def shuffle(self) -> bool:
        return self.shuffle_buffer > 1

    def _slot(self) -> tuple[int, int, int]:
        """(slot, slots, number of workers) of the calling worker; ``rotation`` shifts which worker
        takes which slot so a resumed DataLoader (always starting at worker 0) keeps the order."""
        if self.rank is None:
            slot, slots = worker_slot()
            info = get_worker_info()
            nw = info.num_workers if info is not None else 1
            return slot, slots, nw
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * nw + (wid + self.rotation) % nw, self.world_size * nw, nw

    def slot_items(self, slot: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
        shard, offset = self.catalog.plan(self.seed, self.epoch, self.shuffle)
        lo, hi = slot_range(len(shard), slot, slots)
        rng = np.random.default_rng([self.seed, self.epoch, slot, 1])
        return interleave(shard[lo:hi], offset[lo:hi], self.mix_shards if self.shuffle else 1, rng)

    def _arrange(self, window: list[tuple[int, TokenSequence]], last: bool, rng):
        """Window -> (batches of rows, carried). Rows are packs (best-fit decreasing) or single sequences."""
        if self.pack_length is None:
            rows = [[i] for i in range(len(window))]
            held: list[int] = []
        else:
            bins = best_fit_decreasing([s.footprint for _, s in window], self.pack_length)
            if last:
                ready, under = bins, []
            else:
                ready, under = split_full(
                    bins, self.pack_length, self.min_fill, max_leftover=self.window // 2
                )
            rows = [sorted(b.members) for b in ready]
            rows.sort(key=lambda r: r[0])
            if self.shuffle:  # BFD groups by length; spread long and short packs over the window
                rows = [rows[i] for i in rng.permutation(len(rows))]
            held = [i for b in under for i in b.members]
        full = len(rows) if last else len(rows) // self.batch_size * self.batch_size
        held += [i for r in rows[full:] for i in r]
        batches = [rows[b : b + self.batch_size] for b in range(0, full, self.batch_size)]
        return (
            [[[window[i] for i in r] for r in rows_] for rows_ in batches],
            [window[i] for i in sorted(held)],
        )

    def _reader(self) -> ShardReader:
        return ShardReader(
            self.catalog.shards,
            self.layout,
            [s.label for s in self.catalog.sources],
            self.strict,
            self.pack_length,
            self.overlong,
            max_open=self.mix_shards + 4,
            speaker_dim=self.speaker_dim,
        )

    def __iter__(self) -> Iterator[dict]:
        slot, slots, _ = self._slot()
        shard, offset = self.slot_items(slot, slots)
        n = len(shard)
        reader = self._reader()
        owner = self.catalog.shard_source

        def read(pos: int):
            return reader.get(int(shard[pos]), int(offset[pos]), int(owner[shard[pos]]))

        pos_state = self.resume.get(slot)
        chunk0 = pos_state["chunk"] if pos_state else 0
        skip = pos_state["batch"] + 1 if pos_state else 0
        carried = [(p, s) for p in (pos_state["carried"] if pos_state else []) if (s := read(p)) is not None]
        sent = dict(reader.stats)  # what re-reading the carried samples counted was counted before
        nchunks = -(-n // self.window)
        try:
            for c in range(chunk0, nchunks):
                fresh = [
                    (p, s)
                    for p in range(c * self.window, min((c + 1) * self.window, n))
                    if (s := read(p)) is not None
                ]
                if pos_state and c == chunk0:  # a resumed chunk: its first batch shipped its counts already
                    sent = dict(reader.stats)
                rng = np.random.default_rng([self.seed, self.epoch, slot, c, 2])
                if self.shuffle:
                    fresh = [fresh[i] for i in rng.permutation(len(fresh))]
                start_carried = [p for p, _ in carried]
                batches, carried = self._arrange(carried + fresh, c == nchunks - 1, rng)
                for j, rows in enumerate(batches):
                    if c == chunk0 and j < skip:
                        continue
                    batch = collate(
                        [[s for _, s in r] for r in rows],
                        self.layout.ids.pad,
                        self.layout.num_codebooks,
                        self.pack_length,
                    )
                    batch["stream_state"] = {
                        "epoch": self.epoch,
                        "slot": slot,
                        "chunk": c,
                        "carried": start_carried,
                        "batch": j,
                    }
                    batch["data_stats"] = {k: v - sent[k] for k, v in reader.stats.items()}
                    sent = dict(reader.stats)
                    yield batch
            if self.end_markers:  # the loader wants the counts no batch carried (data/loader.py)
                yield reader.end_of_slot(sent)
        finally:
            reader.close()
