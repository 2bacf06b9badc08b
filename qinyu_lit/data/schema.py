"""Shard schema v2: what one training sample holds, and the one validator for it.

A sample is a group of tar members that share a key (WebDataset convention):

    <key>.json                the document: task, language, prompts, ordered turns
    <key>.turn<i>.flac        user speech of turn i (or .wav / .ogg)
    <key>.turn<i>.codes.npy   assistant audio codes of turn i, int16 [num_codebooks, frames]
    <key>.turn<i>.speaker.npy speaker embedding of the voice in turn i, float32 [D]
    <key>.agent.speaker.npy   the agent voice (mean over samples of that voice), float32 [D]
    <key>.rejected.codes.npy  a preference pair's rejected reply speech (v2), int16 [num_codebooks, frames]

The JSON points at the members it uses, so a reader never guesses. ``decode_sample``
is the validator: the writer runs it on every sample before writing, the reader on
every sample it reads, and both report problems as ``SampleError(shard, key, field)``.
v2 adds preference pairs (DPO): ``preference`` names the pair's kind and ``rejected`` holds the
reply that loses to the last turn, for the same prompt. v1 shards (no pairs) still read.
See ``data_cards/SCHEMA.md`` for the field-by-field description and a worked example.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf

from .audio import AudioError, read_audio

SCHEMA_VERSION = "qinyu/v2"
READABLE_VERSIONS = ("qinyu/v1", SCHEMA_VERSION)  # v2 only added the optional preference fields
TASKS = ("asr", "tts", "sqa", "text", "conversation", "roleplay", "singing", "persona")
ROLES = ("user", "assistant")
AUDIO_EXTENSIONS = (".flac", ".wav", ".ogg")


class SampleError(ValueError):
    """A sample that breaks the schema. Names the shard, the sample key and the field."""

    def __init__(self, shard: str, key: str, field: str, reason: str):
        self.shard, self.key, self.field, self.reason = shard, key, field, reason
        super().__init__(f"{shard}: sample {key!r}, field {field!r}: {reason}")


class CodecMismatch(SampleError):
    """The shards' codes do not fit the model (codebook count or size): a configuration error,
    never skipped as bad data."""


@dataclass(frozen=True)
class CodecInfo:
    """The audio-token format of a sample; checked against the model at training time."""

    name: str
    num_codebooks: int
    codebook_size: int
    frame_rate: float
    sample_rate: int


@dataclass
class Turn:
    role: str
    text: str = ""
    audio: np.ndarray | None = None  # float32 mono waveform (user speech)
    sample_rate: int | None = None
    codes: np.ndarray | None = None  # int64 [num_codebooks, frames] (assistant speech)
    speaker: np.ndarray | None = None  # float32 [D]


@dataclass
class Sample:
    key: str
    task: str
    turns: list[Turn]
    codec: CodecInfo
    language: str = "en"
    system: str = ""
    agent_speaker: np.ndarray | None = None
    shard: str = "<memory>"
    meta: dict = field(default_factory=dict)
    # a preference pair (DPO): the reply that loses to turns[-1] for the same prompt, and the pair's kind
    rejected: Turn | None = None
    preference: str = ""


# --------------------------------------------------------------------------- decoding


def decode_sample(raw: dict, shard: str | None = None) -> Sample:
    """Validate and decode one raw WebDataset sample (member suffix -> bytes).

    Raises ``SampleError`` naming the shard, key and field of the first problem found.
    """
    r = _RawSample(raw, shard)
    doc = r.document()
    task = doc.get("task")
    if task not in TASKS:
        r.fail("task", f"unknown task {task!r}; one of {', '.join(TASKS)}")
    codec = _codec_info(doc.get("codec"), r.fail)
    turns_doc = doc.get("turns")
    if not isinstance(turns_doc, list) or not turns_doc:
        r.fail("turns", "must be a non-empty list of turns")
    turns = [r.turn(f"turns[{i}]", t, codec) for i, t in enumerate(turns_doc)]
    if turns[-1].role != "assistant":
        r.fail("turns", "the last turn must be the assistant's (it is what the model learns to say)")
    agent = doc.get("agent_speaker")
    sample = Sample(
        key=r.key,
        task=task,
        turns=turns,
        codec=codec,
        language=str(doc.get("language", "en")),
        system=str(doc.get("system") or ""),
        agent_speaker=r.embedding("agent_speaker", agent) if agent is not None else None,
        shard=r.shard,
        meta=doc.get("meta") or {},
    )
    _decode_preference(r, doc, sample)
    dims = {v.shape[0] for v in [sample.agent_speaker] + [t.speaker for t in turns] if v is not None}
    if len(dims) > 1:
        r.fail("speaker", f"speaker embeddings of one sample must share a dimension, got {sorted(dims)}")
    return sample


def _decode_preference(r: _RawSample, doc: dict, sample: Sample) -> None:
    """The v2 pair fields: both or neither; the rejected reply is an assistant turn unlike the chosen one."""
    kind, rejected = doc.get("preference"), doc.get("rejected")
    if kind is None and rejected is None:
        return
    if not isinstance(kind, str) or not kind:
        r.fail("preference", f"a pair needs its kind (a non-empty string, e.g. 'empathy'), got {kind!r}")
    if rejected is None:
        r.fail("rejected", "a sample with a preference kind needs the rejected reply")
    sample.preference, sample.rejected = kind, r.turn("rejected", rejected, sample.codec)
    if sample.rejected.role != "assistant":
        r.fail("rejected.role", "the rejected reply is the assistant's")
    if same_reply(sample.rejected, sample.turns[-1]):
        r.fail("rejected", "identical to the chosen reply (the last turn): the pair teaches nothing")


def same_reply(a: Turn, b: Turn) -> bool:
    """Two assistant replies with the same words and the same speech codes."""
    if a.text != b.text or (a.codes is None) != (b.codes is None):
        return False
    return a.codes is None or np.array_equal(a.codes, b.codes)


class _RawSample:
    """One raw sample being decoded; every error it raises names the shard, the key and the field."""

    def __init__(self, raw: dict, shard: str | None):
        self.raw = raw
        self.key = raw.get("__key__", "<no key>")
        self.shard = shard or raw.get("__url__", "<memory>")

    def fail(self, field_name: str, reason: str):
        raise SampleError(self.shard, self.key, field_name, reason)

    def document(self) -> dict:
        if "json" not in self.raw:
            self.fail("json", "missing member <key>.json")
        try:
            doc = json.loads(self.raw["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self.fail("json", f"not valid JSON ({e})")
        if not isinstance(doc, dict):
            self.fail("json", "the document must be a JSON object")
        if doc.get("schema") not in READABLE_VERSIONS:
            self.fail("schema", f"expected one of {READABLE_VERSIONS}, got {doc.get('schema')!r}")
        return doc

    def member(self, field_name: str, name) -> bytes:
        if not isinstance(name, str) or not name:
            self.fail(field_name, f"expected a member name, got {name!r}")
        if name not in self.raw:
            self.fail(field_name, f"member {self.key}.{name} is missing from the shard (a sample's members must be adjacent)")
        return self.raw[name]

    def embedding(self, field_name: str, name) -> np.ndarray:
        vec = _load_npy(self.member(field_name, name), field_name, self.fail)
        if vec.ndim != 1 or vec.size == 0:
            self.fail(field_name, f"speaker embedding must be a non-empty vector, got shape {vec.shape}")
        vec = vec.astype(np.float32)
        if not np.isfinite(vec).all():
            self.fail(field_name, "speaker embedding contains NaN or inf")
        return vec

    def turn(self, where: str, t, codec: CodecInfo) -> Turn:
        if not isinstance(t, dict) or t.get("role") not in ROLES:
            self.fail(f"{where}.role", f"each turn needs a role in {ROLES}")
        text = t.get("text", "")
        if not isinstance(text, str):
            self.fail(f"{where}.text", "must be a string")
        turn = Turn(role=t["role"], text=text)
        if t.get("audio") is not None:
            if turn.role != "user":
                self.fail(f"{where}.audio", "only user turns carry a waveform; assistant speech is codes")
            data = self.member(f"{where}.audio", t["audio"])
            turn.audio, turn.sample_rate = _load_audio(data, f"{where}.audio", self.fail)
        if t.get("codes") is not None:
            if turn.role != "assistant":
                self.fail(f"{where}.codes", "only assistant turns carry audio codes")
            turn.codes = _load_codes(self.member(f"{where}.codes", t["codes"]), codec, f"{where}.codes", self.fail)
        if t.get("speaker") is not None:
            turn.speaker = self.embedding(f"{where}.speaker", t["speaker"])
        if not turn.text and turn.audio is None and turn.codes is None:
            self.fail(where, "turn has neither text, audio nor codes")
        return turn


def _codec_info(doc, fail) -> CodecInfo:
    if not isinstance(doc, dict):
        fail("codec", "missing codec description {name, num_codebooks, codebook_size, frame_rate, sample_rate}")
    try:
        info = CodecInfo(
            name=str(doc["name"]),
            num_codebooks=int(doc["num_codebooks"]),
            codebook_size=int(doc["codebook_size"]),
            frame_rate=float(doc["frame_rate"]),
            sample_rate=int(doc["sample_rate"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        fail("codec", f"incomplete codec description ({e})")
    if info.num_codebooks < 1 or info.codebook_size < 2 or info.frame_rate <= 0:
        fail("codec", f"implausible codec description {info}")
    return info


def _load_npy(data: bytes, field_name: str, fail) -> np.ndarray:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # numpy raises several types for garbage
        fail(field_name, f"not a readable .npy array ({type(e).__name__}: {e})")


def _load_codes(data: bytes, codec: CodecInfo, field_name: str, fail) -> np.ndarray:
    codes = _load_npy(data, field_name, fail)
    if codes.ndim != 2 or codes.shape[0] != codec.num_codebooks:
        fail(field_name, f"expected shape [{codec.num_codebooks}, frames], got {list(codes.shape)}")
    if codes.shape[1] == 0:
        fail(field_name, "codes have zero frames")
    if not np.issubdtype(codes.dtype, np.integer):
        fail(field_name, f"codes must be integers, got {codes.dtype}")
    if codes.min() < 0 or codes.max() >= codec.codebook_size:
        fail(field_name, f"code ids must lie in [0, {codec.codebook_size}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int64)


def _load_audio(data: bytes, field_name: str, fail) -> tuple[np.ndarray, int]:
    try:
        return read_audio(data, where="")
    except AudioError as e:
        fail(field_name, str(e))


# --------------------------------------------------------------------------- encoding


def encode_sample(sample: Sample) -> dict:
    """Turn a ``Sample`` into WebDataset members (suffix -> bytes), following the schema."""
    raw: dict = {"__key__": sample.key}
    wide = sample.codec.codebook_size > 32768
    turns = [_encode_turn(raw, f"turn{i}", t, wide) for i, t in enumerate(sample.turns)]
    document = {
        "schema": SCHEMA_VERSION,
        "task": sample.task,
        "language": sample.language,
        "system": sample.system,
        "codec": sample.codec.__dict__,
        "turns": turns,
    }
    if sample.agent_speaker is not None:
        raw["agent.speaker.npy"] = _npy_bytes(np.asarray(sample.agent_speaker, dtype=np.float32))
        document["agent_speaker"] = "agent.speaker.npy"
    if sample.rejected is not None:
        document["preference"] = sample.preference
        document["rejected"] = _encode_turn(raw, "rejected", sample.rejected, wide)
    if sample.meta:
        document["meta"] = sample.meta
    raw["json"] = json.dumps(document, ensure_ascii=False, indent=1).encode()
    return raw


def _encode_turn(raw: dict, prefix: str, t: Turn, wide_codes: bool) -> dict:
    """One turn's document; its arrays go into ``raw`` as ``<prefix>.flac`` / ``.codes.npy`` / ``.speaker.npy``."""
    doc: dict = {"role": t.role, "text": t.text}
    if t.audio is not None:
        raw[f"{prefix}.flac"] = _flac_bytes(t.audio, t.sample_rate)
        doc["audio"] = f"{prefix}.flac"
    if t.codes is not None:
        raw[f"{prefix}.codes.npy"] = _npy_bytes(np.asarray(t.codes).astype(np.int32 if wide_codes else np.int16))
        doc["codes"] = f"{prefix}.codes.npy"
    if t.speaker is not None:
        raw[f"{prefix}.speaker.npy"] = _npy_bytes(np.asarray(t.speaker, dtype=np.float32))
        doc["speaker"] = f"{prefix}.speaker.npy"
    return doc


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _flac_bytes(wav: np.ndarray, sample_rate: int | None) -> bytes:
    if sample_rate is None:
        raise ValueError("a waveform needs its sample_rate")
    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def audio_seconds(sample: Sample) -> float:
    """User speech seconds plus assistant speech seconds of a sample."""
    user = sum(len(t.audio) / t.sample_rate for t in sample.turns if t.audio is not None)
    agent = sum(t.codes.shape[1] / sample.codec.frame_rate for t in sample.turns if t.codes is not None)
    return user + agent if math.isfinite(user + agent) else 0.0
