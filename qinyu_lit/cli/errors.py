"""From an exception to the one ``qinyu-lit: error: ...`` line a user reads (``None``: a bug, shown in full)."""

from __future__ import annotations

import os

from ..data.errors import QinYuError

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # qinyu_lit/
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def _raised_here(e: BaseException) -> bool:
    """The innermost frame that raised ``e`` is this package's code: its message was written for users."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(_PACKAGE)


def user_error_message(e: BaseException, args: list[str]) -> str | None:
    """The one line to print for a user error, or ``None`` for a bug (shown with its traceback)."""
    import pickle

    import soundfile

    text = str(e).strip()
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: the message holds the traceback
        files = [ln for ln in text.splitlines() if ln.strip().startswith('File "')]
        if not files or _PACKAGE not in files[-1]:
            return None
        text = text.splitlines()[-1].split(": ", 1)[-1]
    elif isinstance(e, pickle.UnpicklingError) or "PytorchStreamReader" in text:
        return f"not a qinyu-lit checkpoint (.ckpt from qinyu-lit fit) or export directory ({first_line(text)})"
    elif not isinstance(e, (QinYuError, OSError, soundfile.SoundFileError)):
        if not (isinstance(e, (ValueError, TypeError, KeyError, RuntimeError)) and _raised_here(e)):
            return None
    line = first_line(text) or type(e).__name__
    if isinstance(e, FileNotFoundError) and "shard" in line and args and args[0] in LIGHTNING_COMMANDS:
        line += "; `qinyu-lit demo-data data/demo` writes the demo corpus the tiny recipes read"
    elif ("huggingface.co" in text or "couldn't connect" in text) and "offline" not in line:
        fast = "" if os.environ.get("HF_HUB_OFFLINE") else ", or set HF_HUB_OFFLINE=1 to fail at once"
        line += f" (offline? pass local folders{fast}; docs/data.md, Offline)"
    return line
