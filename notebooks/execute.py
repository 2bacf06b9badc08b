"""Execute notebooks in place and store them with their outputs, minus what changes from run to run.

    python notebooks/execute.py notebooks/06_lora_persona.ipynb [more.ipynb ...]   # or: notebooks/*.ipynb

Each notebook runs top to bottom in a fresh kernel (nbclient) from a temporary working directory
(``QINYU_LIT_ROOT`` points it at this checkout's recipes), then is written back with its outputs and
pictures so a reader browsing the repository sees them. Stripped: kernel and run metadata
(``metadata.kernelspec``/``language_info`` versions, widget state, per-cell ``execution`` timestamps)
and output ``metadata``; kept: execution counts, text, images.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
VOLATILE_NOTEBOOK_KEYS = ("widgets", "language_info", "vscode", "toc")


def strip_volatile(nb) -> None:
    """Remove what differs between two runs of the same code: timestamps, kernel ids, widget state."""
    for key in VOLATILE_NOTEBOOK_KEYS:
        nb.metadata.pop(key, None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # nbclient's start/end timestamps
        cell.metadata.pop("collapsed", None)
        for output in cell.get("outputs", []):
            if "metadata" in output:  # display data / results: required by the schema, emptied
                output["metadata"] = {}


def execute(path: Path, timeout: int = 600) -> None:
    nb = nbformat.read(path, as_version=4)
    os.environ.setdefault("QINYU_LIT_ROOT", str(ROOT))
    with tempfile.TemporaryDirectory() as work:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": work}}).execute()
    strip_volatile(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print(f"executed {path} ({sum(c.cell_type == 'code' for c in nb.cells)} code cells)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    for path in args.notebooks:
        execute(path, args.timeout)


if __name__ == "__main__":
    main()
