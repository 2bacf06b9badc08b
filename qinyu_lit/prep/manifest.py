"""Build manifests: one JSON object per line, one training sample per row.

A row (every path relative to the manifest's folder, or absolute)::

    {"key": "conv-000001",                     # optional: <manifest name>-<line>; no '.' or '/'
     "task": "conversation",                    # asr tts sqa text conversation roleplay singing persona
     "language": "en",                          # optional, default "en"
     "system": "You are Captain Mira ...",      # optional system / persona prompt
     "agent_voice": "mira",                     # optional voice id: mean embedding of that voice's clips
     "agent_speaker": "voices/mira.npy",        # ... or a precomputed vector (not both)
     "turns": [
       {"role": "user", "text": "", "audio": "wav/q1.wav", "speaker": "spk/u1.npy"},
       {"role": "assistant", "text": "Hello there.", "audio": "wav/a1.flac"}],
     "meta": {"source": "my-corpus"}}           # optional, copied into the sample

A preference pair (for DPO) gives ``preference`` (its kind) and two whole conversations, ``chosen``
and ``rejected``, instead of ``turns``: every turn but the last must be the same in both (the prompt),
the last ones must differ (else the row is ``identical_pair``).

User audio is kept as a waveform (the encoder reads it while training); assistant audio is
turned into codec codes. The last turn must be the assistant's and every assistant turn
needs text (the model speaks its text, interleaved with the codes).

``scan_manifest`` runs every check that needs no decoding (JSON, fields - an unknown one is a
typo and makes the row bad, with the nearest valid name -, duplicate keys,
empty text, files present, headers readable, durations, embeddings) and reports each bad
row as a ``BadRow`` with its line number and reason. Decoding problems are found later,
while building, and reported the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import soundfile as sf

from ..data.errors import did_you_mean
from ..data.schema import ROLES, TASKS
from .speakers import load_embedding

# the fields a row and a turn may hold (data_cards/SCHEMA.md, "Manifest format"); any other is a typo
ROW_FIELDS = ("key", "task", "language", "system", "agent_voice", "agent_speaker", "turns", "meta",
              "preference", "chosen", "rejected")  # the last three: a preference pair (DPO)
TURN_FIELDS = ("role", "text", "audio", "speaker")

BAD_ROW_KINDS = (
    "invalid_row",  # not JSON, a missing, unknown or malformed field
    "duplicate_key",  # the key was used by an earlier line
    "empty_text",  # an assistant turn without text, or a user turn with neither text nor audio
    "missing_audio",  # an audio file that does not exist
    "unreadable_audio",  # an audio file soundfile cannot open or decode
    "too_long",  # an audio file over --max_audio_seconds
    "bad_embedding",  # a speaker embedding that is missing, unreadable, not a vector, NaN or inf
    "identical_pair",  # a preference pair whose chosen and rejected replies are the same
)


@dataclass
class BadRow:
    """One skipped manifest row: where it is and why it was skipped."""

    manifest: str
    line: int
    key: str | None
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.manifest}:{self.line}: {self.kind}: sample {self.key!r}: {self.reason}"

    def to_dict(self) -> dict:
        return asdict(self)


class BadRowError(ValueError):
    """Raised in ``--strict`` mode for the first bad row."""

    def __init__(self, bad: BadRow):
        self.bad = bad
        super().__init__(f"{bad} (strict mode: stopping at the first bad row)")

    def __reduce__(self):  # rebuilt from the BadRow when it crosses from a worker process
        return (BadRowError, (self.bad,))


@dataclass
class ManifestTurn:
    role: str
    text: str = ""
    audio: str | None = None  # resolved path
    audio_seconds: float = 0.0
    speaker: str | None = None  # resolved path of a .npy


@dataclass
class ManifestRow:
    line: int
    key: str
    task: str
    turns: list[ManifestTurn]
    language: str = "en"
    system: str = ""
    agent_voice: str | None = None
    agent_speaker: str | None = None
    meta: dict = field(default_factory=dict)
    preference: str = ""  # a pair's kind; then ``rejected`` is the losing last turn
    rejected: ManifestTurn | None = None

    @property
    def audio_seconds(self) -> float:
        return sum(t.audio_seconds for t in self.turns + ([self.rejected] if self.rejected else []))


@dataclass
class ManifestScan:
    rows: list[ManifestRow]
    bad: list[BadRow]


class _Bad(Exception):
    def __init__(self, kind: str, reason: str):
        self.kind, self.reason = kind, reason


def scan_manifest(path: str | Path, max_audio_seconds: float = 60.0, strict: bool = False) -> ManifestScan:
    """Parse and check every row of a JSONL manifest.

    Args:
        path: the manifest.
        max_audio_seconds: an audio file longer than this makes its row ``too_long``.
        strict: raise ``BadRowError`` at the first bad row instead of skipping it.
    """
    path = Path(path)
    root = path.parent
    rows, bad, seen = [], [], {}
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            key = None
            try:
                doc = _json_object(line)
                key = _key(doc, path, line_no)
                if key in seen:
                    raise _Bad("duplicate_key", f"key already used on line {seen[key]}")
                seen[key] = line_no
                rows.append(_row(doc, key, line_no, root, max_audio_seconds))
            except _Bad as e:
                bad.append(BadRow(str(path), line_no, key, e.kind, e.reason))
                if strict:
                    raise BadRowError(bad[-1]) from None
    return ManifestScan(rows, bad)


def _json_object(line: str) -> dict:
    try:
        doc = json.loads(line)
    except json.JSONDecodeError as e:
        raise _Bad("invalid_row", f"not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _Bad("invalid_row", "a row must be a JSON object")
    return doc


def _key(doc: dict, path: Path, line_no: int) -> str:
    key = doc.get("key", f"{path.stem.replace('.', '_')}-{line_no:08d}")
    # WebDataset splits member names at the first '.', and '/' would make folders in the tar
    if not isinstance(key, str) or not key or "." in key or "/" in key:
        raise _Bad("invalid_row", f"key must be a non-empty string without '.' or '/', got {key!r}")
    return key


def _unknown_fields(doc: dict, fields: tuple[str, ...], where: str) -> None:
    # a typo ("audo") would otherwise build a sample without that field and no word said
    for name in doc:
        if name not in fields:
            hint = did_you_mean(name, fields) or f" (fields: {', '.join(fields)})"
            raise _Bad("invalid_row", f"{where}unknown field {name!r}{hint}")


def _row(doc: dict, key: str, line_no: int, root: Path, max_seconds: float) -> ManifestRow:
    _unknown_fields(doc, ROW_FIELDS, "")
    task = doc.get("task")
    if task not in TASKS:
        raise _Bad("invalid_row", f"task must be one of {', '.join(TASKS)}, got {task!r}")
    turns_doc, rejected_doc = _pair_turns(doc) if "preference" in doc else (doc.get("turns"), None)
    if not isinstance(turns_doc, list) or not turns_doc:
        raise _Bad("invalid_row", "turns must be a non-empty list")
    for name in ("language", "system", "agent_voice", "agent_speaker"):
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise _Bad("invalid_row", f"{name} must be a string, got {doc[name]!r}")
    if doc.get("agent_voice") and doc.get("agent_speaker"):
        raise _Bad("invalid_row", "give agent_voice or agent_speaker, not both")
    if doc.get("meta") is not None and not isinstance(doc["meta"], dict):
        raise _Bad("invalid_row", "meta must be a JSON object")
    turns = [_turn(t, i, root, max_seconds) for i, t in enumerate(turns_doc)]
    if turns[-1].role != "assistant":
        raise _Bad("invalid_row", "the last turn must be the assistant's")
    agent_speaker = None
    if doc.get("agent_speaker"):
        agent_speaker = _embedding(doc["agent_speaker"], root, "agent_speaker")
    rejected = None if rejected_doc is None else _turn(rejected_doc, len(turns) - 1, root, max_seconds, "rejected")
    if rejected is not None and rejected.role != "assistant":
        raise _Bad("invalid_row", "rejected: the last turn must be the assistant's")
    return ManifestRow(
        preference=doc.get("preference") or "",
        rejected=rejected,
        line=line_no,
        key=key,
        task=task,
        turns=turns,
        language=doc.get("language") or "en",
        system=doc.get("system") or "",
        agent_voice=doc.get("agent_voice") or None,
        agent_speaker=agent_speaker,
        meta=doc.get("meta") or {},
    )


def _pair_turns(doc: dict) -> tuple[list, dict]:
    """A preference row's ``chosen`` conversation (the sample's turns) and its ``rejected`` last turn.
    Their prompts must be the same and their replies not."""
    if "turns" in doc:
        raise _Bad("invalid_row", "a preference pair gives chosen and rejected conversations, not turns")
    kind, chosen, rejected = doc.get("preference"), doc.get("chosen"), doc.get("rejected")
    if not isinstance(kind, str) or not kind:
        raise _Bad("invalid_row", f"preference must name the pair's kind (e.g. 'empathy'), got {kind!r}")
    for name, conv in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(conv, list) or not conv:
            raise _Bad("invalid_row", f"{name} must be a non-empty list of turns")
    if len(chosen) != len(rejected):
        raise _Bad("invalid_row", f"rejected has {len(rejected)} turns, chosen {len(chosen)}: the prompts differ")
    for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1], strict=True)):
        if a != b:
            raise _Bad("invalid_row", f"rejected[{i}] differs from chosen[{i}]: the prompts differ (only the last turn may)")
    if chosen[-1] == rejected[-1]:
        raise _Bad("identical_pair", "chosen and rejected replies are identical: the pair teaches nothing")
    return chosen, rejected[-1]


def _turn(t, i: int, root: Path, max_seconds: float, where: str | None = None) -> ManifestTurn:
    where = where or f"turns[{i}]"
    if not isinstance(t, dict) or t.get("role") not in ROLES:
        raise _Bad("invalid_row", f"{where}.role must be one of {ROLES}")
    _unknown_fields(t, TURN_FIELDS, f"{where}: ")
    text = t.get("text", "")
    if not isinstance(text, str):
        raise _Bad("invalid_row", f"{where}.text must be a string")
    for name in ("audio", "speaker"):
        if t.get(name) is not None and not isinstance(t[name], str):
            raise _Bad("invalid_row", f"{where}.{name} must be a path string")
    turn = ManifestTurn(role=t["role"], text=text)
    if turn.role == "assistant" and not text.strip():
        raise _Bad("empty_text", f"{where}: an assistant turn needs text (the model speaks it)")
    if turn.role == "user" and not text.strip() and not t.get("audio"):
        raise _Bad("empty_text", f"{where}: a user turn needs text or audio")
    if t.get("audio"):
        turn.audio = str(root / t["audio"])
        turn.audio_seconds = _audio_seconds(turn.audio, f"{where}.audio", max_seconds)
    if t.get("speaker"):
        turn.speaker = _embedding(t["speaker"], root, f"{where}.speaker")
    return turn


def _audio_seconds(path: str, where: str, max_seconds: float) -> float:
    if not Path(path).is_file():
        raise _Bad("missing_audio", f"{where}: {path} does not exist")
    try:
        info = sf.info(path)
    except Exception as e:  # libsndfile errors
        raise _Bad(
            "unreadable_audio", f"{where}: {path} cannot be opened ({type(e).__name__}: {e})"
        ) from None
    if info.frames == 0:
        raise _Bad("unreadable_audio", f"{where}: {path} has no samples")
    seconds = info.frames / info.samplerate
    if seconds > max_seconds:
        raise _Bad(
            "too_long",
            f"{where}: {path} lasts {seconds:.1f} s, over the {max_seconds:g} s limit (--max_audio_seconds)",
        )
    return seconds


def _embedding(name: str, root: Path, where: str) -> str:
    path = str(root / name)
    try:
        load_embedding(path)
    except ValueError as e:
        raise _Bad("bad_embedding", f"{where}: {e}") from None
    return path
