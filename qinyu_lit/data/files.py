"""Writing files so that a crash never leaves half a file under the real name.

``atomic_path`` is the one implementation used by shards, ``index.json`` and build state, voice
vectors and checkpoints: the content goes to ``<name>.partial`` beside the target (same file system,
so the final ``os.replace`` is atomic) and replaces the target only once it is complete; on any error
the partial file is removed and the previous target, if any, is left as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# a persona's card (name, prompt, voice), in its data folder and beside the LoRA adapter of an export
CARD_NAME = "persona.json"


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """Yield the temporary path to write; on success it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when writing failed


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
