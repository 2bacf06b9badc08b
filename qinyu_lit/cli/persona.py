"""``qinyu-lit persona-reply``: a reply in character (base + persona adapter), from text or speech, as speech."""

from __future__ import annotations

from pathlib import Path

from .generate import check_reply_inputs, checked_codec, write_reply


def persona_reply_cmd(
    base: str,
    adapter: str,
    text: str | None = None,
    audio: str | None = None,
    codec: str | None = None,
    out: str = "persona_reply",
    speaker: str | None = None,
    system: str | None = None,
    max_new_positions: int = 512,
    device: str = "cpu",
    voice_description: str | None = None,
    voice_design: str | None = None,
) -> None:
    """Reply in character: the base model + one persona adapter, its system prompt and its voice (the card's).

    ``qinyu-lit persona-reply BASE ADAPTER "hot sun"`` or ``--audio question.wav``; ``--codec demo`` writes
    OUT.wav. Writes OUT.txt and OUT.npy (codes [8, frames]); a reply without speech writes no WAV and, when
    --codec asked for speech, is an error (exit status 2).

    Args:
        base: the base the persona was trained on: an exported directory or a checkpoint (SFT).
        adapter: a persona adapter directory (``qinyu-lit export CKPT DIR --adapter_only true``).
        text: the user's message as text (the third positional argument; with ``audio``: text after the speech).
        audio: the user's message as speech: a WAV/FLAC file.
        codec: decodes the reply's codes to OUT.wav, as ``generate --codec`` (``demo``: the demo's tone decoder).
        out: output path stem: OUT.txt, OUT.npy and (with ``codec``) OUT.wav.
        speaker: another agent voice (``.npy``) instead of the persona card's.
        system: another system prompt instead of the persona card's.
        max_new_positions: stop after this many generated positions.
        device: ``cpu`` or ``cuda``.
        voice_description: instead of the card's voice, design one from these words (with ``voice_design``); they
            are added to the card's system prompt (docs/voice_design.md).
        voice_design: the VoiceDesign checkpoint (``.ckpt`` of ``VoiceDesignStage`` or a saved directory).
    """
    from ..inference import load_model
    from ..persona_bank import PersonaBank

    check_reply_inputs(base, audio, speaker, None)
    if not Path(adapter).is_dir():
        from ..data.errors import QinYuError

        raise QinYuError(f"{adapter}: no such persona adapter directory (qinyu-lit export CKPT DIR --adapter_only true)")
    bank = PersonaBank(load_model(base, device=device))
    name = Path(adapter).name
    card = bank.add(name, adapter)
    codec_model = checked_codec(bank.model, codec, device)
    overrides = {k: v for k, v in (("speaker", speaker), ("system", system)) if v is not None}
    if voice_description is not None:  # a designed voice, and its description in the system prompt
        from ..stages.voice_design_cli import design_agent_voice

        prompt = system if system is not None else card.get("system_prompt", "")
        overrides["speaker"], overrides["system"] = design_agent_voice(voice_design, voice_description, prompt, device=device)
    result = bank.reply(text, persona=name, audio=audio, max_new_positions=max_new_positions, **overrides)
    print(f"[{card.get('profile', {}).get('name', name)}] {result.text}")
    write_reply(result, out, codec_model, max_new_positions)
