"""The project's user-error type and the check that config dicts hold only known keys.

``QinYuError`` lives in the bottom layer so that every layer (data, prep, model, stages) can
raise it; ``qinyu-lit`` prints its message as one line and exits 2 (``--debug`` shows the
traceback). Raise it for mistakes a user can fix: a wrong path, a flag that does not match
the data, a typo in a config.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable


class QinYuError(ValueError):
    """A user error with a message that says what is wrong and what to change.

    A ``ValueError`` so that code (and tests) that catch ``ValueError`` keep working."""


class DataWarning(UserWarning):
    """A sample or the rest of a shard was skipped; the message names the shard and the key."""


class DataError(RuntimeError):
    """Raised instead of a ``DataWarning`` in strict mode (``data.strict: true``)."""


def bad_data(message: str, strict: bool, stacklevel: int = 3) -> None:
    """Warn about bad data (skipped and counted), or raise ``DataError`` in strict mode."""
    if strict:
        raise DataError(message + " (strict mode; set data.strict=false to skip and count instead)")
    import warnings

    warnings.warn(message, DataWarning, stacklevel=stacklevel)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest choice (difflib), or ``""`` when none is close."""
    near = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""


def check_keys(given: Iterable[str], valid: Iterable[str], where: str) -> None:
    """Raise ``QinYuError`` naming the first unknown key and the nearest valid one."""
    valid = set(valid)
    for key in given:
        if key not in valid:
            raise QinYuError(f"{where}: unknown key {key!r}{did_you_mean(key, valid)}")


def config_keys(config_cls) -> set[str]:
    """Keys a ``transformers`` config class understands: its ``__init__`` arguments, every field of
    its default ``to_dict()`` (the common ``PretrainedConfig`` ones included) and its attribute aliases.

    A ``PretrainedConfig`` stores any unknown keyword as an attribute without a word, so a typo
    (``hiden_size``) would silently leave the default; this set is what the typo is checked against.
    """
    keys = {
        name
        for cls in config_cls.__mro__
        if "__init__" in vars(cls)
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name != "self"
    }
    keys |= set(config_cls().to_dict())
    keys |= set(getattr(config_cls, "attribute_map", {}))
    return keys | {"torch_dtype"}  # the name of ``dtype`` before transformers 5, still accepted


def check_config_dict(config_cls, spec: dict, where: str) -> None:
    """Fail on a key of ``spec`` that ``config_cls`` (a ``transformers`` config class) does not know.

    Args:
        config_cls: e.g. ``Qwen3Config``, ``MimiConfig``, ``WavLMConfig``.
        spec: the dict of config fields the user wrote.
        where: what the dict is, as the user wrote it (``net.backbone``, ``--codec``).
    """
    check_keys(spec, config_keys(config_cls), f"{where} ({config_cls.__name__})")
