"""Load a trained model and ask it for a reply: text or speech in, text and speech codes out.

    from qinyu_lit.inference import load_codec, load_model, reply_to, write_wav
    from qinyu_lit.model.sampling import Sampler

    model = load_model("checkpoints/tiny_sft/last.ckpt")   # or an exported directory
    reply = reply_to(model, audio="question.wav", speaker="voice.npy",
                     audio_sampler=Sampler(temperature=0.8, top_k=50, seed=0))
    reply.text, reply.codes                        # str, LongTensor [8, frames]
    write_wav(reply.codes, load_codec("kyutai/mimi"), "reply.wav")    # codes -> 24 kHz speech
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from lightning.fabric.utilities.apply_func import move_data_to_device

from .codec import DemoRuleCodec, MimiCodec, check_codec, valid_codes, write_wav  # noqa: F401 - part of this API
from .data.audio import read_audio
from .data.batch import collate
from .data.features import FbankLFR, SenseVoiceFbank, WhisperMel
from .data.layout import TokenLayout
from .data.mixture import expand_shards
from .data.schema import CodecInfo, Sample, Turn, decode_sample
from .data.tar import iter_raw_samples
from .model.generate import Generated, generate
from .model.qinyu import QinYuModel
from .model.sampling import greedy
from .stages.base import QinYuStage
from .stages.checkpoints import stage_from_checkpoint

# ---------------------------------------------------------------------------- loading


def load_stage(ckpt_path: str, map_location: str = "cpu") -> QinYuStage:
    """Rebuild the stage a Lightning checkpoint was written by (its class, LoRA included), in eval mode.

    Read with ``weights_only=True``: nothing is unpickled (``stages/checkpoints.py``).
    """
    return stage_from_checkpoint(ckpt_path, map_location=map_location)


def load_model(path: str, device: str = "cpu") -> QinYuModel:
    """A ``QinYuModel`` in eval mode from a Lightning checkpoint file or a ``qinyu-lit export`` directory."""
    return load_with_persona(path, device)[0]


def load_with_persona(path: str, device: str = "cpu") -> tuple[QinYuModel, dict | None]:
    """``load_model`` plus the persona card the checkpoint carries (persona stage: ``system_prompt``
    and ``voice``), or ``None``."""
    import json

    card = None
    if Path(path).is_dir():
        model = QinYuModel.from_pretrained(path)
        if (Path(path) / "persona.json").is_file():
            card = json.loads((Path(path) / "persona.json").read_text())
    elif Path(path).is_file():
        stage = load_stage(path)
        model, card = stage.model, getattr(stage, "persona_card", None)
    else:
        raise FileNotFoundError(f"no checkpoint file or exported directory at {path}")
    return model.to(device).eval(), card


def layout_for(model: QinYuModel, pattern=(1, 8, 4, 8), cmvn: str | None = None) -> TokenLayout:
    """The data layout matching a model: same tokenizer, codebooks, token layout
    (``model.config.token_layout``), delay pads and encoder front end. ``cmvn``: SenseVoiceSmall's
    ``am.mvn`` for a ``sense_voice`` encoder (as in training: ``data.cmvn``)."""
    cfg = model.config
    front_end = None
    if model.audio_encoder is not None:
        if cfg.audio_encoder_type == "fun_asr_nano":
            front_end = FbankLFR()
        elif cfg.audio_encoder_type == "sense_voice":
            front_end = SenseVoiceFbank(cmvn, num_mel_bins=model.audio_encoder.config.input_size // 7)  # LFR m = 7
        else:
            front_end = WhisperMel(model.audio_encoder.config.num_mel_bins)
    return TokenLayout(
        model.tokenizer, pattern, cfg.num_codebooks, cfg.codebook_size, front_end,
        profile=cfg.token_layout, delay_pads=cfg.delay_pads,
    )  # fmt: skip


def find_sample(shard_spec: str, key: str) -> Sample:
    for raw in iter_raw_samples(expand_shards(shard_spec)):
        if raw["__key__"] == key:
            return decode_sample(raw)
    raise KeyError(f"no sample {key!r} in {shard_spec}")


# ---------------------------------------------------------------------------- inputs


def read_embedding(value, what: str) -> np.ndarray:
    """A speaker embedding from a ``.npy`` path or an array, as float32 [D]."""
    arr = np.load(value, allow_pickle=False) if isinstance(value, (str, Path)) else np.asarray(value)
    if arr.ndim == 2:  # several utterances of one voice [N, D]: the paper averages ~100 of them
        arr = arr.mean(0)
    if arr.ndim != 1:
        raise ValueError(f"the {what} embedding must be [D] or [utterances, D], got shape {arr.shape}")
    return arr.astype(np.float32)


def check_inputs(model: QinYuModel, sample: Sample) -> None:
    """Fail early, naming the input, on what this checkpoint cannot take."""
    dim = model.config.speaker_dim
    for i, turn in enumerate(sample.turns):
        if turn.audio is not None and model.audio_encoder is None:
            raise ValueError(
                f"sample {sample.key!r}: turns[{i}] is user speech, but this checkpoint has no audio encoder "
                "(it was trained with net.audio_encoder: null); give the message as text instead"
            )
        if turn.speaker is not None and turn.speaker.shape != (dim,):
            raise ValueError(
                f"sample {sample.key!r}: turns[{i}].speaker has shape {tuple(turn.speaker.shape)}, "
                f"but this checkpoint takes speaker embeddings of dimension {dim} (net.speaker_dim)"
            )
    if sample.agent_speaker is not None and sample.agent_speaker.shape != (dim,):
        raise ValueError(
            f"sample {sample.key!r}: the agent voice embedding has shape {tuple(sample.agent_speaker.shape)}, "
            f"but this checkpoint takes speaker embeddings of dimension {dim} (net.speaker_dim)"
        )


def make_sample(
    model: QinYuModel,
    text: str = "",
    audio=None,
    system: str = "",
    speaker=None,
    user_speaker=None,
    history: list[Turn] | None = None,
) -> Sample:
    """A one-question ``Sample`` (with optional earlier turns) whose last assistant turn is to be generated."""
    user = Turn("user", text or "")
    if audio is not None:
        wav, sr = read_audio(audio) if isinstance(audio, (str, Path)) else audio
        user.audio, user.sample_rate = np.asarray(wav, dtype=np.float32), int(sr)
    if user_speaker is not None:
        user.speaker = read_embedding(user_speaker, "user speaker")
    if not user.text and user.audio is None:
        raise ValueError("give the user message as text, audio, or both")
    turns = list(history or []) + [user, Turn("assistant", "")]
    codec = CodecInfo("model", model.config.num_codebooks, model.config.codebook_size, 12.5, 16000)
    agent = read_embedding(speaker, "agent voice") if speaker is not None else None
    return Sample("prompt", "conversation", turns, codec, system=system, agent_speaker=agent)


# ---------------------------------------------------------------------------- replying


def prompt_batch(model: QinYuModel, sample: Sample, layout: TokenLayout | None = None) -> dict:
    """The collated one-row generation prompt for the last assistant turn of ``sample``."""
    check_inputs(model, sample)
    layout = layout or layout_for(model)
    prompt = layout.build(sample, prompt_only=True)
    batch = collate([[prompt]], layout.ids.pad, layout.num_codebooks)
    return move_data_to_device(batch, next(model.parameters()).device)


def reply_to(
    model: QinYuModel,
    text: str | None = None,
    shard: str | None = None,
    key: str | None = None,
    sample: Sample | None = None,
    system: str = "",
    max_new_positions: int = 512,
    layout: TokenLayout | None = None,
    audio=None,
    speaker=None,
    user_speaker=None,
    history: list[Turn] | None = None,
    text_sampler=greedy,
    audio_sampler=greedy,
) -> Generated:
    """Generate the (last) assistant turn.

    The input is one of: ``text`` and/or ``audio`` (a WAV path or ``(waveform, sample_rate)``),
    a stored sample (``shard`` + ``key``), or a ``Sample``. Earlier turns go in ``history``
    (user turns, and assistant turns whose speech is dropped by the layout: the history rule).
    ``speaker`` is the agent voice embedding (``.npy`` path or array; a stack of utterance
    embeddings is averaged), ``user_speaker`` the user's. ``text_sampler`` / ``audio_sampler``
    pick ids (``Sampler(temperature, top_k, top_p, seed)``; greedy by default).
    """
    if sample is None:
        if shard and key:
            sample = find_sample(shard, key)
        elif text is not None or audio is not None:
            sample = make_sample(model, text or "", audio, system, speaker, user_speaker, history)
        else:
            raise ValueError("give text and/or audio, or shard and key, or a Sample")
    batch = prompt_batch(model, sample, layout)
    return generate(model, batch, max_new_positions=max_new_positions, pick_text=text_sampler, pick_audio=audio_sampler)


# ---------------------------------------------------------------------------- speech out


def load_codec(model: str | dict = "kyutai/mimi", device: str = "cpu"):
    """The codec that turns codes back into audio: ``codec.MimiCodec`` (transformers ``MimiModel``).

    ``model`` is a pretrained name or directory, or a dict of ``MimiConfig`` fields (random weights).
    ``"demo"`` is the demo corpus's toy tone decoder (``codec.DemoRuleCodec``; its codes have no real codec).
    """
    if model == "demo":
        return DemoRuleCodec()
    return MimiCodec(model, device=device)
