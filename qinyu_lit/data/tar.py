"""Reading tar shards: the one reader that groups a shard's members into samples by key.

A sample is the run of consecutive members that share a key (``<key>.<suffix>``, WebDataset's naming,
``base_plus_ext``). ``ShardCursor`` reads a shard front to back and can step over samples reading only
their headers (resume seeks to a sample this way; ``scan_count`` counts a shard without reading data).
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator

from webdataset.tariterators import base_plus_ext

TAR_ERRORS = (tarfile.TarError, EOFError, OSError)  # what a truncated or garbled shard raises


class ShardCursor:
    """Sequential reader of one tar shard that can step over samples without reading their data."""

    def __init__(self, path: str):
        self.path = path
        self.tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed by close()
        self.next_offset = 0  # offset of the sample the next call returns
        self.last_key = "<start of shard>"
        self.reading_key: str | None = None  # the sample being read (known from its first header)
        self._keys: set[str] = set()  # keys read so far: a key seen again breaks the adjacency rule
        self._pending: tarfile.TarInfo | None = None

    def _member(self) -> tarfile.TarInfo | None:
        if self._pending is not None:
            m, self._pending = self._pending, None
            return m
        while (m := self.tar.next()) is not None and not m.isfile():
            pass
        return m

    def next_sample(self, read: bool = True) -> dict | None:
        """The next sample's members (suffix -> bytes) or ``None`` at the end of the shard.
        With ``read=False`` only the headers are parsed (data is seeked over)."""
        first = self._member()
        if first is None:
            return None
        split = base_plus_ext(first.name)
        if split is None:
            raise tarfile.ReadError(f"member {first.name!r} has no <key>.<suffix> name")
        key = self.reading_key = split[0]
        _check_adjacent(key, self._keys, self.path)
        raw = {"__key__": key, "__url__": self.path}
        m: tarfile.TarInfo | None = first
        while m is not None:
            prefix, suffix = base_plus_ext(m.name) or (None, None)
            if prefix != key:
                self._pending = m
                break
            if read:
                raw[suffix.lower()] = self.tar.extractfile(m).read()
            m = self._member()
        self.next_offset += 1
        self.last_key = key
        return raw

    def close(self) -> None:
        self.tar.close()


def iter_raw_samples(shards: list[str]) -> Iterator[dict]:
    """Raw WebDataset samples (member suffix -> bytes, plus ``__key__`` and ``__url__``)."""
    for shard in shards:
        cursor = ShardCursor(shard)
        try:
            while (raw := cursor.next_sample()) is not None:
                yield raw
        finally:
            cursor.close()


def _check_adjacent(key: str, seen: set[str], shard: str) -> None:
    # tar shards are read front to back, one sample = one run of members with the same key
    if key in seen:
        raise tarfile.ReadError(
            f"{shard}: members of sample {key!r} are not adjacent (another sample's members lie between them); "
            "the members of one sample must be consecutive in the tar (data_cards/SCHEMA.md) - rewrite the shard "
            "with write_shard or `tar --sort=name`"
        )
    seen.add(key)


def scan_count(shard: str) -> tuple[int, str | None]:
    """Samples in a shard from its tar headers only (member data is seeked over, not read), and the
    error that stopped the scan (``None`` when the shard reads to its end). A damaged shard counts what
    its readable headers hold; the reader reports the damage later."""
    cursor, count = None, 0
    try:
        cursor = ShardCursor(shard)
        while cursor.next_sample(read=False) is not None:
            count += 1
    except TAR_ERRORS as e:
        # a sample whose first header was read counts: the reader then reports it as lost, by key
        count += cursor is not None and cursor.reading_key not in (None, cursor.last_key)
        return count, f"{type(e).__name__}: {e}"
    finally:
        if cursor is not None:
            cursor.close()
    return count, None
