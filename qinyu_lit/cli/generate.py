"""``qinyu-lit generate`` and the reply writing it shares with ``persona-reply``: text, codes and a WAV.

An empty result is never reported as success: a reply without speech frames writes no WAV and says
why in one line; when speech was asked for (``--codec``) that is an error (exit status 2). A reply
cut by ``--max_new_positions`` before ``<|im_end|>`` says it is unfinished.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.errors import QinYuError
from .errors import first_line


def generate_cmd(
    ckpt: str,
    text: str | None = None,
    audio: str | None = None,
    shard: str | None = None,
    key: str | None = None,
    system: str = "",
    speaker: str | None = None,
    user_speaker: str | None = None,
    out: str = "reply",
    codec: str | None = None,
    text_temperature: float = 0.0,
    text_top_k: int = 0,
    text_top_p: float = 1.0,
    audio_temperature: float = 0.0,
    audio_top_k: int = 0,
    audio_top_p: float = 1.0,
    seed: int = 0,
    max_new_positions: int = 512,
    device: str = "cpu",
    voice_description: str | None = None,
    voice_design: str | None = None,
) -> None:
    """Generate one interleaved reply (text + 8-codebook speech) and write it out.

    Writes OUT.txt (the text) and OUT.npy (the speech codes [codebooks, frames], delay undone); with
    --codec also OUT.wav decoded at the codec's sample rate. Greedy unless a temperature is set. A reply
    without speech frames writes no .npy / .wav and says why (an error when --codec asked for speech).

    Args:
        ckpt: a Lightning checkpoint from ``qinyu-lit fit`` or a directory from ``qinyu-lit export``.
        text: the user's message as text (with ``audio``: text that goes after the speech, e.g. an instruction).
        audio: the user's message as speech: a WAV/FLAC file (any rate; resampled for the encoder).
        shard: instead of text/audio, take the conversation from this shard (its last assistant turn is generated).
        key: the sample key inside ``shard``.
        system: system / persona prompt (e.g. "You are Captain Mira, ..."); a persona checkpoint's card gives the default.
        speaker: agent voice embedding, a ``.npy`` of [D] or [utterances, D] (averaged), D = the model's speaker_dim;
            a persona checkpoint's card gives the default.
        user_speaker: the user's voice embedding (``.npy``), for models trained with it.
        out: output path stem: OUT.txt, OUT.npy and (with ``codec``) OUT.wav.
        codec: decodes the codes to OUT.wav. ``demo``: the demo corpus's tone decoder (``qinyu_lit.codec.DemoRuleCodec``,
            one 80 ms tone per frame pitched by its codebook-0 code: the demo's rule codes have no real codec);
            otherwise a Mimi name or directory (``kyutai/mimi``) whose codebooks match the model's.
            ``None``: text and codes only.
        text_temperature: text-head temperature; 0 = greedy.
        text_top_k: text head: sample among the k most likely ids (0 = all).
        text_top_p: text head: nucleus sampling mass (1.0 = off).
        audio_temperature: codebook heads' temperature; 0 = greedy.
        audio_top_k: codebook heads: sample among the k most likely codes (0 = all).
        audio_top_p: codebook heads: nucleus sampling mass (1.0 = off).
        seed: sampling seed (the same seed and inputs give the same reply).
        max_new_positions: stop after this many generated positions (text ids + audio frames).
        device: ``cpu`` or ``cuda``.
        voice_description: design the agent voice from these words (with ``voice_design``) and add them to the
            system prompt, instead of ``speaker`` (docs/voice_design.md).
        voice_design: the VoiceDesign checkpoint (``.ckpt`` of ``VoiceDesignStage`` or a saved directory).
    """
    from ..inference import load_with_persona, reply_to
    from ..model.sampling import Sampler

    check_reply_inputs(ckpt, audio, speaker, user_speaker)  # before the (slow) model load
    if voice_description is not None:  # the designed voice, and the description in the system prompt
        from ..stages.voice_design_cli import design_agent_voice

        speaker, system = design_agent_voice(voice_design, voice_description, system, seed=seed, device=device)
    model, card = load_with_persona(ckpt, device=device)
    if card and shard is None:  # a persona checkpoint answers as its character unless told otherwise
        system = system or card.get("system_prompt", "")
        speaker = speaker if speaker is not None else card.get("voice")
        print(f"persona card: {'system prompt, ' if system else ''}{'voice' if speaker is not None else ''}")
    codec_model = checked_codec(model, codec, device)
    result = reply_to(
        model, text=text, audio=audio, shard=shard, key=key, system=system, speaker=speaker,
        user_speaker=user_speaker, max_new_positions=max_new_positions,
        text_sampler=Sampler(text_temperature, text_top_k, text_top_p, seed),
        audio_sampler=Sampler(audio_temperature, audio_top_k, audio_top_p, seed + 1),
    )  # fmt: skip
    print(f"text: {result.text}")
    write_reply(result, out, codec_model, max_new_positions)


def checked_codec(model, codec: str | None, device: str = "cpu"):
    """The codec that decodes the model's codes (``None``: none asked), checked before generating: fail fast."""
    if not codec:
        return None
    from ..inference import check_codec, load_codec

    codec_model = load_codec(codec, device=device)
    check_codec(model, codec_model)
    return codec_model


def output_stem(out: str) -> str:
    """``reply``, ``reply.wav``, ``reply.npy`` and ``reply.txt`` all name the stem ``reply``."""
    return str(Path(out).with_suffix("")) if Path(out).suffix in (".npy", ".wav", ".txt") else out


def write_reply(result, out: str, codec_model, max_new_positions: int) -> None:
    """OUT.txt, OUT.npy and (with a codec) OUT.wav; a reply without speech writes neither codes nor WAV.

    Raises ``QinYuError`` (one line, exit status 2) when a codec asked for speech and the reply has none."""
    import numpy as np

    from ..inference import valid_codes, write_wav

    stem = output_stem(out)
    Path(stem).parent.mkdir(parents=True, exist_ok=True)
    status = "finished" if result.finished else f"UNFINISHED: cut at --max_new_positions {max_new_positions}"
    print(f"speech: {result.num_frames} frames x {result.codes.shape[0]} codebooks, "
          f"{result.frames_per_text_token:.2f} frames per text token; {status}")  # fmt: skip
    Path(f"{stem}.txt").write_text(result.text + "\n")
    if result.num_frames == 0:
        why = (f"the reply ended after {len(result.positions)} positions without speech: "
               "raise --max_new_positions or check the checkpoint")  # fmt: skip
        if codec_model is not None:
            raise QinYuError(f"{why}; wrote {stem}.txt, no {stem}.wav")
        print(f"note: {why}; wrote {stem}.txt only")
        return
    np.save(f"{stem}.npy", result.codes.cpu().numpy(), allow_pickle=False)
    print(f"wrote {stem}.npy and {stem}.txt")
    if codec_model is not None:
        _, replaced = valid_codes(result.codes.cpu(), codec_model.codebook_size)
        if replaced:
            print(f"note: {replaced} pad / out-of-range codes replaced by 0 before decoding")
        samples, rate = write_wav(result.codes.cpu(), codec_model, f"{stem}.wav")
        print(f"wrote {stem}.wav ({samples / rate:.2f} s at {rate} Hz)")


def check_reply_inputs(ckpt: str, audio: str | None, speaker: str | None, user_speaker: str | None) -> None:
    """Paths the reply needs, checked before the model loads: one line naming the option."""
    import soundfile

    if not os.path.exists(ckpt):
        raise QinYuError(f"{ckpt}: no such checkpoint (.ckpt from qinyu-lit fit) or export directory")
    if audio is not None:
        if not os.path.isfile(audio):
            raise QinYuError(f"--audio {audio}: no such file")
        try:
            soundfile.info(audio)
        except soundfile.SoundFileError as e:
            raise QinYuError(f"--audio {audio}: not a readable audio file (WAV/FLAC/OGG): {first_line(str(e))}") from None
    for flag, path in (("--speaker", speaker), ("--user_speaker", user_speaker)):
        if path is not None and not os.path.isfile(path):
            raise QinYuError(f"{flag} {path}: no such .npy file")
