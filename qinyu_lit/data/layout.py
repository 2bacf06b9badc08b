"""Sample -> token sequence: the exact layout the model trains on (paper Eq. 1, Fig. 2).

One conversation becomes a Qwen-style chat::

    <|im_start|>system\\n{system}<|im_end|>\\n
    <|im_start|>user\\n<|user_speaker|><|audio_start|><|audio|>*N<|audio_end|>{text}<|im_end|>\\n
    <|im_start|>assistant\\n<|speaker|>{interleaved text and audio frames}<|im_end|>\\n

* Every position holds either a text id or one assistant audio frame (8 codes, averaged
  into one embedding by the model). ``codes[t]`` is -1 at text positions.
* The assistant's audio is delayed (``delay.py``) and then interleaved with its text in
  blocks following ``pattern`` (default ``1 8 4 8``: 1 text token, 8 frames, then 4 : 8
  repeating). The released model's tail rule: the block pair in which either modality runs
  out is the last one and takes all that remains of both, text first (text 30, frames 20
  -> 27 positions: ``T1 A8 T4 A8 T4 A8 T21 A3``; text 3: ``T1 A8 T2 A19``), so text always
  leads its speech.
* ``<|audio|>`` is repeated once per encoder output frame; ``<|speaker|>`` and
  ``<|user_speaker|>`` are single placeholders. The model swaps in their embeddings.
* History: earlier assistant turns keep their text, their speech is dropped (Fig. 2a).
* ``target_mask[t]`` marks positions whose content is predicted from position t-1: the
  content of the supervised assistant turn(s) and their closing ``<|im_end|>``.

``profile="official"`` builds the released VITA-QinYu's samples instead (``layout_official.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import numpy as np

from .delay import delay
from .schema import CodecMismatch, Sample, SampleError
from .tokenizer import SpecialIds, official_audio_token, special_ids


@dataclass
class TokenSequence:
    """One sample laid out as positions. Packs and batches are made of these."""

    input_ids: np.ndarray  # int64 [L]
    codes: np.ndarray  # int64 [L, num_codebooks]; -1 at text positions
    target_mask: np.ndarray  # bool [L]
    speakers: list[np.ndarray] = field(default_factory=list)  # one per speaker placeholder, in order
    audio_features: list[np.ndarray] = field(default_factory=list)  # one per <|audio_start|> span, in order
    key: str = ""
    source: str = ""
    task: str = ""
    # a preference pair (DPO): this is the chosen conversation; ``rejected`` the same prompt with the
    # losing reply. The stream keeps both in one pack (``footprint``), ``collate`` lays them side by side.
    rejected: TokenSequence | None = None
    preference: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def footprint(self) -> int:
        """Positions this item takes in a pack: the sequence, plus its rejected twin for a pair."""
        return len(self) + (len(self.rejected) if self.rejected is not None else 0)

    @property
    def num_targets(self) -> int:
        return int(self.target_mask.sum())


def rejected_key(key: str) -> str:
    """The rejected twin's key (sample keys hold no '/'; counters count a pair once by it)."""
    return f"{key}/rejected"


def is_rejected_key(key: str) -> bool:
    return key.endswith("/rejected")


def user_speech_starts(ids: np.ndarray, special) -> np.ndarray:
    """Positions of the user-speech spans of ``ids``: an audio-start id followed by a placeholder.
    The one rule for "which audio-start opens user speech" (the official layout also wraps a
    speech-only assistant reply in audio start/end, with frames, not placeholders, inside): the
    layout, truncation and the evaluation's batch splitting all count spans with it.

    ``special`` is the layout's ``SpecialIds`` (``audio_start``, ``audio``)."""
    ids = np.asarray(ids)
    starts = np.flatnonzero(ids[:-1] == special.audio_start)
    return starts[ids[starts + 1] == special.audio]


class TokenLayout:
    """Builds ``TokenSequence``s from ``Sample``s.

    Args:
        tokenizer: a tokenizer from ``load_tokenizer`` (QinYu special tokens present).
        pattern: interleave blocks as ``[n_text, m_audio, n_text, m_audio, ...]``; the last
            pair repeats. The paper's default is ``[1, 8, 4, 8]``.
        num_codebooks: codebooks per audio frame; samples with another count are rejected.
        codebook_size: code ids per codebook; the per-codebook pad id is ``codebook_size``.
        front_end: user-speech feature extractor (``features.FbankLFR`` or ``WhisperMel``);
            ``None`` rejects samples with user speech.
        supervise: ``"last"`` trains on the last assistant turn only (paper default),
            ``"all"`` on every assistant turn. The ``official`` profile has its own rule
            (speech samples: the last turn; text-only samples: every turn) and ignores this.
        profile: ``"qinyu"`` (this project's layout) or ``"official"`` (the released
            VITA-QinYu's, for converted checkpoints; needs the release's tokenizer).
        delay_pads: ``"single"`` or ``"positional"`` pad ids (``delay.py``); default: the
            profile's own (qinyu: single, official: positional).
    """

    def __init__(
        self,
        tokenizer,
        pattern: Seq[int] = (1, 8, 4, 8),
        num_codebooks: int = 8,
        codebook_size: int = 1024,
        front_end=None,
        supervise: str = "last",
        profile: str = "qinyu",
        delay_pads: str | None = None,
    ):
        if len(pattern) < 2 or len(pattern) % 2 or any(p < 0 for p in pattern) or pattern[-2] + pattern[-1] == 0:
            raise ValueError(f"pattern must be pairs [n_text, m_audio, ...] with a non-empty last pair, got {pattern}")
        if supervise not in ("last", "all"):
            raise ValueError(f"supervise must be 'last' or 'all', got {supervise!r}")
        self.tokenizer = tokenizer
        self.profile = profile
        self.ids: SpecialIds = special_ids(tokenizer, profile)
        self.delay_pads = delay_pads or ("positional" if profile == "official" else "single")
        self.pairs = [(pattern[i], pattern[i + 1]) for i in range(0, len(pattern), 2)]
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size
        self.front_end, self.supervise = front_end, supervise
        self._text_cache: dict[str, list[int]] = {}
        if profile == "official":
            self._check_audio_tokens()

    @property
    def pad_code(self) -> int:
        """The (first) delay pad: codes >= ``pad_code`` are pads."""
        return self.codebook_size

    def _check_audio_tokens(self) -> None:
        # the release's vocabulary has C x (K + C) audio ids; another K would shift every id
        c, k = self.num_codebooks, self.codebook_size
        last = self.tokenizer.convert_tokens_to_ids(official_audio_token(c - 1, k + c - 1, k))
        if last != self.ids.audio_base + c * (k + c) - 1:
            raise ValueError(
                f"the tokenizer's audio tokens do not hold {c} x ({k} + {c}) ids from <|audio_0_0|>; "
                "set --data.init_args.codebook_size / num_codebooks to the release's (8 x 1024)"
            )

    # ------------------------------------------------------------------ building

    def build(self, sample: Sample, prompt_only: bool = False) -> TokenSequence:
        """Lay out ``sample``. With ``prompt_only`` stop right where the model starts answering
        (after ``<|im_start|>assistant\\n<|speaker|>`` of the last turn): the generation prompt.
        A preference pair also lays out its rejected conversation (``TokenSequence.rejected``)."""
        self._check_codec(sample)
        seq = self._conversation(sample, prompt_only)
        if sample.rejected is not None and not prompt_only:
            losing = dataclasses.replace(sample, turns=[*sample.turns[:-1], sample.rejected], rejected=None)
            seq.rejected = self._conversation(losing, False)
            seq.rejected.key = rejected_key(sample.key)
            seq.preference = seq.rejected.preference = sample.preference
        return seq

    def _conversation(self, sample: Sample, prompt_only: bool) -> TokenSequence:
        if self.profile == "official":
            from .layout_official import build_official

            return build_official(self, sample, prompt_only)
        b = self.builder()
        ids = self.ids
        if sample.system:
            b.text([ids.im_start] + self.tokens("system\n" + sample.system) + [ids.im_end] + self.tokens("\n"))
        last = len(sample.turns) - 1
        for i, turn in enumerate(sample.turns):
            if turn.role == "user":
                b.text([ids.im_start] + self.tokens("user\n"))
                if turn.speaker is not None:
                    b.text([ids.user_speaker])
                    b.speakers.append(turn.speaker)
                if turn.audio is not None:
                    feats = self.user_features(sample, i)
                    b.text([ids.audio_start] + [ids.audio] * self.front_end.num_outputs(feats) + [ids.audio_end])
                    b.audio_features.append(feats)
                if turn.text:
                    b.text(self.tokens(turn.text))
                b.text([ids.im_end] + self.tokens("\n"))
                continue
            b.text([ids.im_start] + self.tokens("assistant\n"))
            if sample.agent_speaker is not None:
                b.text([ids.speaker])
                b.speakers.append(sample.agent_speaker)
            if prompt_only and i == last:
                break
            supervised = i == last or self.supervise == "all"
            if i == last:  # the answer: text interleaved with its (delayed) speech
                self.interleave(b, self.tokens(turn.text), turn.codes, supervised)
            elif turn.text:  # history keeps the text, drops the speech
                b.text(self.tokens(turn.text), supervised)
            b.text([ids.im_end], supervised)
            b.text(self.tokens("\n"))
        return b.finish(key=sample.key, source=sample.shard, task=sample.task)

    # ------------------------------------------------------------------ the surface both profiles build with
    # builder(), tokens(), user_features(), interleave(), delayed(), frame_ids(): layout_official.py uses these

    def builder(self) -> SequenceBuilder:
        """An empty sequence to append positions to (``text``, ``frames``), then ``finish``."""
        return SequenceBuilder(self.num_codebooks)

    def delayed(self, codes) -> np.ndarray:
        """[C, T] codes -> [T + C - 1, C] audio positions (empty without codes)."""
        if codes is None:
            return np.zeros((0, self.num_codebooks), np.int64)
        return delay(np.asarray(codes, dtype=np.int64), self.pad_code, self.delay_pads).T

    def frame_ids(self, frames: np.ndarray):
        """Input ids of audio positions: ``<|frame|>`` (qinyu) or codebook 0's audio id (official)."""
        if self.profile == "official":
            return self.ids.audio_base + frames[:, 0]
        return self.ids.frame

    def interleave(self, b: SequenceBuilder, text: list[int], codes, supervised: bool) -> None:
        # the release's rule: the block pair in which either stream runs out is the last one
        # and takes everything left of both, text first (see the module docstring)
        audio = self.delayed(codes)
        ti = ai = k = 0
        while True:
            n, m = self.pairs[min(k, len(self.pairs) - 1)]
            if ti + n >= len(text) or ai + m >= len(audio):
                n, m = len(text) - ti, len(audio) - ai
            b.text(text[ti : ti + n], supervised)
            b.frames(audio[ai : ai + m], self.frame_ids(audio[ai : ai + m]), supervised)
            ti, ai, k = ti + n, ai + m, k + 1
            if ti >= len(text) and ai >= len(audio):
                return

    def tokens(self, text: str) -> list[int]:
        ids = self._text_cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._text_cache) < 4096:  # role headers and newlines repeat constantly
                self._text_cache[text] = ids
        return ids

    def user_features(self, sample: Sample, i: int) -> np.ndarray:
        turn = sample.turns[i]
        if self.front_end is None:
            raise SampleError(sample.shard, sample.key, f"turns[{i}].audio", "user speech needs an audio front end")
        feats = self.front_end(turn.audio, turn.sample_rate)
        if len(feats) == 0:
            raise SampleError(sample.shard, sample.key, f"turns[{i}].audio", "audio too short for one feature frame")
        return feats

    def _check_codec(self, sample: Sample) -> None:
        c = sample.codec
        has_codes = any(t.codes is not None for t in [*sample.turns, sample.rejected] if t is not None)
        if has_codes and (c.num_codebooks, c.codebook_size) != (self.num_codebooks, self.codebook_size):
            raise CodecMismatch(
                sample.shard,
                sample.key,
                "codec",
                f"shard codes are {c.num_codebooks} x {c.codebook_size} ({c.name}) but the model expects "
                f"{self.num_codebooks} x {self.codebook_size}; set --data.init_args.num_codebooks "
                f"{c.num_codebooks} --data.init_args.codebook_size {c.codebook_size} (the model follows) "
                "or rebuild the shards with the model's codec",
            )

    def truncate(self, seq: TokenSequence, length: int) -> TokenSequence:
        """Keep at most the first ``length`` positions, never cutting a user-speech span in half
        (the encoder output must fill all of its placeholders). Payloads follow the kept ids."""
        ids = seq.input_ids
        if len(ids) <= length:
            return seq
        for s, e in self.user_speech_spans(ids):
            if s < length <= e:
                length = int(s)
                break
        kept = ids[:length]
        return TokenSequence(
            kept,
            seq.codes[:length],
            seq.target_mask[:length],
            speakers=seq.speakers[: int(np.isin(kept, [self.ids.speaker, self.ids.user_speaker]).sum())],
            audio_features=seq.audio_features[: len(self.user_speech_spans(kept))],
            key=seq.key,
            source=seq.source,
            task=seq.task,
        )

    def user_speech_spans(self, ids: np.ndarray) -> list[tuple[int, int]]:
        """(start, end) of each complete or cut user-speech span: an audio-start id followed by a
        placeholder (the official profile also wraps a speech-only assistant turn in start/end)."""
        ends = np.flatnonzero(ids == self.ids.audio_end)
        spans = []
        for s in user_speech_starts(ids, self.ids):
            after = ends[ends > s]
            spans.append((int(s), int(after[0]) if len(after) else len(ids)))
        return spans

    # ------------------------------------------------------------------ reading

    def describe(self, seq: TokenSequence) -> list[str]:
        """Human-readable layout, one entry per run of positions (``*`` = supervised).

        Text shows as its tokens, runs of ``<|audio|>`` as ``<|audio|>x N``, frames as
        ``[c0 c1 ... c7]`` with ``_`` for a delay pad.
        """
        out, t = [], 0
        while t < len(seq):
            star = "*" if seq.target_mask[t] else ""
            if seq.codes[t, 0] >= 0:
                codes = " ".join("_" if c >= self.pad_code else str(c) for c in seq.codes[t])
                out.append(f"{star}[{codes}]")
                t += 1
                continue
            tid = int(seq.input_ids[t])
            run = 1
            if tid == self.ids.audio:
                while t + run < len(seq) and seq.input_ids[t + run] == tid:
                    run += 1
            token = self.tokenizer.convert_ids_to_tokens(tid)
            out.append(f"{star}{token}" + (f"x{run}" if run > 1 else ""))
            t += run
        return out


class SequenceBuilder:
    """Accumulates positions; text and frames append in order."""

    def __init__(self, num_codebooks: int):
        self.num_codebooks = num_codebooks
        self.ids: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.mask: list[np.ndarray] = []
        self.speakers: list[np.ndarray] = []
        self.audio_features: list[np.ndarray] = []

    def text(self, ids: list[int], supervised: bool = False) -> None:
        if not len(ids):
            return
        self.ids.append(np.asarray(ids, dtype=np.int64))
        self.codes.append(np.full((len(ids), self.num_codebooks), -1, dtype=np.int64))
        self.mask.append(np.full(len(ids), supervised))

    def frames(self, frames: np.ndarray, frame_id, supervised: bool) -> None:
        """``frame_id``: one input id for every frame, or one per frame."""
        if not len(frames):
            return
        self.ids.append(np.broadcast_to(np.asarray(frame_id, dtype=np.int64), (len(frames),)).copy())
        self.codes.append(np.asarray(frames, dtype=np.int64))
        self.mask.append(np.full(len(frames), supervised))

    def finish(self, **meta) -> TokenSequence:
        return TokenSequence(
            np.concatenate(self.ids),
            np.concatenate(self.codes),
            np.concatenate(self.mask),
            speakers=self.speakers,
            audio_features=self.audio_features,
            **meta,
        )
