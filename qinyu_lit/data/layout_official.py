"""The released VITA-QinYu's sample layout (``TokenLayout(profile="official")``).

What a converted checkpoint was trained on, rule by rule (its dataset code, studied, not copied)::

    <|im_start|>system\\n{system\\n}Your Voice Embedding: <|speaker|><|im_end|>\\n
    <|im_start|>user\\n{text before}<|user_speaker|><|begin_of_audio|><|context_of_audio|>*N<|end_of_audio|>{text after}<|im_end|>\\n
    <|im_start|>assistant\\n *{text}<|end_of_conv|> interleaved 1 8 4 8 with codebook 0's audio ids *<|im_end|> *\\n

* The agent voice sits once, in the system message (a system message holding only that line
  is made when the sample has none), and only in samples whose assistant turns hold speech: a
  text-only reply has neither the line nor the vector (the release's dataset code adds the line
  only ``if has_audio``). Speaker embeddings follow placeholder order.
* User speech stands where ``<|audio|>`` is in the turn's text (at the start when there is no
  tag) and always carries ``<|user_speaker|>``: the sample must have that turn's speaker.
  N comes from the front end (SenseVoice: LFR frames + 4 query frames).
* The reply's text ends with ``<|end_of_conv|>``; it is interleaved with the delayed codes
  (positional pads) without begin/end-of-audio. A speech-only reply keeps them:
  ``<|begin_of_audio|>`` frames ``<|end_of_audio|>``. Audio positions hold the codebook-0 id
  ``audio_base + value`` (pads included); ``codes`` holds all C values.
* Supervised: the reply content, ``<|im_end|>`` and the ``\\n`` after it. A sample with any
  assistant speech supervises only its last turn; a text-only sample every assistant turn.
  Earlier assistant turns keep their text, their speech is dropped.
* Role names and ``\\n`` are tokenized apart from the content, as the release does.
* TTS pre-pass: an assistant turn with codes but no text after a user turn containing
  ``Convert the text to speech.`` says the text that follows that phrase.
"""

from __future__ import annotations

from dataclasses import replace

from .schema import Sample, SampleError

VOICE_LINE = "Your Voice Embedding: <|speaker|>"
AUDIO_TAG = "<|audio|>"
TTS_PROMPT = "Convert the text to speech."


def build_official(layout, sample: Sample, prompt_only: bool):
    """``layout``: the calling ``TokenLayout`` (its public building surface: ``builder``, ``tokens``,
    ``user_features``, ``interleave``, ``delayed``, ``frame_ids``). Returns the ``TokenSequence``."""
    ids, tok, b = layout.ids, layout.tokens, layout.builder()
    turns = _tts_prepass(sample.turns)
    has_speech = any(t.role == "assistant" and t.codes is not None for t in turns)
    system = sample.system
    # the release writes the voice line (and so the agent vector) only where the reply has speech
    if sample.agent_speaker is not None and has_speech and VOICE_LINE not in system:
        system = f"{system}\n{VOICE_LINE}" if system else VOICE_LINE
    if system:
        content = tok(system)
        wanted = content.count(ids.speaker)
        if wanted and sample.agent_speaker is None:
            raise SampleError(sample.shard, sample.key, "agent_speaker", "the system prompt has <|speaker|> but the sample no agent voice")
        b.speakers += [sample.agent_speaker] * wanted
        _message(b, layout, "system", content, False)
    last = len(turns) - 1
    for i, turn in enumerate(turns):
        if turn.role == "user":
            _message(b, layout, "user", _user_content(layout, b, sample, i), False)
            continue
        if prompt_only and i == last:
            b.text([ids.im_start] + tok("assistant") + tok("\n"))
            break
        supervised = i == last if has_speech else True
        b.text([ids.im_start] + tok("assistant") + tok("\n"))
        if i == last and turn.codes is not None:
            _speech_reply(layout, b, tok(turn.text), turn.codes, supervised)
        else:  # a text reply, or history: its text stays, its speech goes
            b.text(tok(turn.text), supervised)
        b.text([ids.im_end] + tok("\n"), supervised)
    return b.finish(key=sample.key, source=sample.shard, task=sample.task)


def _message(b, layout, role: str, content: list[int], supervised: bool) -> None:
    ids, tok = layout.ids, layout.tokens
    b.text([ids.im_start] + tok(role) + tok("\n"))
    b.text(content, supervised)
    b.text([ids.im_end] + tok("\n"), supervised)


def _user_content(layout, b, sample: Sample, i: int) -> list[int]:
    turn, ids, tok = sample.turns[i], layout.ids, layout.tokens
    if turn.audio is None:
        return tok(turn.text)
    if turn.speaker is None:
        raise SampleError(
            sample.shard,
            sample.key,
            f"turns[{i}].speaker",
            "the official layout puts <|user_speaker|> before every user speech; rebuild the shards with "
            "speaker embeddings (data build --speakers) or use token_layout: qinyu",
        )
    before, _, after = turn.text.partition(AUDIO_TAG) if AUDIO_TAG in turn.text else ("", "", turn.text)
    feats = layout.user_features(sample, i)
    b.speakers.append(turn.speaker)
    b.audio_features.append(feats)
    n = layout.front_end.num_outputs(feats)
    speech = [ids.user_speaker, ids.audio_start] + [ids.audio] * n + [ids.audio_end]
    return tok(before) + speech + tok(after)


def _speech_reply(layout, b, text: list[int], codes, supervised: bool) -> None:
    ids = layout.ids
    if not text:  # a speech-only reply keeps its begin/end of audio
        frames = layout.delayed(codes)
        b.text([ids.audio_start], supervised)
        b.frames(frames, layout.frame_ids(frames), supervised)
        b.text([ids.audio_end], supervised)
        return
    layout.interleave(b, text + [ids.end_of_conv], codes, supervised)


def _tts_prepass(turns):
    out = list(turns)
    for i in range(1, len(out)):
        prev, turn = out[i - 1], out[i]
        if turn.role == "assistant" and turn.codes is not None and not turn.text and TTS_PROMPT in prev.text:
            out[i] = replace(turn, text=prev.text.split(TTS_PROMPT, 1)[1].strip())
    return out
