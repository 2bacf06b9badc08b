"""Building the two pretrained-or-random parts: the LLM backbone and the audio encoder.

One code path for both cases: a string is a pretrained name or directory and goes
through ``from_pretrained``; a dict is a config (with ``model_type``) and builds the same
class with random weights - that is how the tests get a tiny Qwen3 or FunAsrNano encoder.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModelForCausalLM

from ..data.errors import QinYuError, check_config_dict
from .attention import resolve_attn_implementation  # also registers qinyu_varlen with transformers

ENCODER_TYPES = ("fun_asr_nano", "whisper", "sense_voice")
FRONT_END_OF = {"fun_asr_nano": "fbank_lfr", "whisper": "whisper", "sense_voice": "sense_voice"}  # data.audio_front_end


def front_end_of(kind: str) -> str:
    """The data module's ``audio_front_end`` for an ``audio_encoder_type`` (cli.py links the two)."""
    return FRONT_END_OF.get(kind, "fbank_lfr")


def encoder_mel_bins(spec: str | dict | None, kind: str) -> int:
    """Mel bins the audio encoder reads (``num_mel_bins`` of its config: 80, Whisper large-v3 128).

    Read from a dict config or, for a name, from a config already on disk (``local_files_only``:
    parsing a recipe never downloads); 80 when neither says. The link to ``data.num_mel_bins``.
    """
    if isinstance(spec, dict):
        return int(spec.get("num_mel_bins", 80))
    if isinstance(spec, str):
        try:
            return int(getattr(AutoConfig.from_pretrained(spec, local_files_only=True), "num_mel_bins", 80))
        except (OSError, ValueError):
            return 80  # not on disk yet: building the model downloads it, and a mismatch fails there
    return 80


def _dtype(name: str | None):
    return getattr(torch, name) if name else None


# keys of a hub config.json that transformers accepts but whose config classes do not list: the legacy RoPE
# names (mapped into ``rope_parameters`` by transformers itself), and the weight dtype (``net.dtype`` decides it)
LEGACY_ROPE_KEYS = ("rope_theta", "rope_scaling")
DTYPE_KEYS = ("torch_dtype", "dtype")


def hub_config_dict(spec: dict, dtype: str | None, where: str = "net.backbone") -> dict:
    """A ``config.json`` copied from the hub, as the backbone is built from it: its dtype key is dropped
    (the model's dtype is ``net.dtype``: a different value only warns), the rest goes to transformers."""
    # JSON null reaches a class's nested dict through LightningCLI as the string "None" (jsonargparse 4.53);
    # no transformers config field takes that string, so it is None
    spec = {k: None if v in ("None", "null") else v for k, v in spec.items()}
    model_dtype = dtype or "float32"
    for key in DTYPE_KEYS:
        value = spec.pop(key, None)
        if value is not None and str(value).removeprefix("torch.") != model_dtype:
            warnings.warn(
                f"{where}.{key}: {value} is not used: the weights are {model_dtype}, set by net.dtype "
                f"(set net.dtype: {str(value).removeprefix('torch.')} to load them so)",
                stacklevel=3,
            )
    return spec


def build_backbone(spec: str | dict, attn_implementation: str = "auto", dtype: str | None = None) -> nn.Module:
    """Any causal LM from ``transformers`` (paper: Qwen3-8B, Youtu-LLM-4B).

    ``attn_implementation="auto"``: ``qinyu_varlen`` on CUDA, ``sdpa`` on CPU (``model/attention.py``).
    """
    attn_implementation = resolve_attn_implementation(attn_implementation)
    if isinstance(spec, str):
        return AutoModelForCausalLM.from_pretrained(spec, attn_implementation=attn_implementation, dtype=_dtype(dtype))
    spec = hub_config_dict(spec, dtype)
    model_type = spec.pop("model_type", None)
    if model_type not in CONFIG_MAPPING:
        raise QinYuError(f"net.backbone: model_type must name a transformers model (e.g. 'qwen3'), got {model_type!r}")
    legacy = {k: spec.pop(k) for k in LEGACY_ROPE_KEYS if k in spec}  # transformers maps them into rope_parameters
    # a PretrainedConfig keeps unknown keys silently: a typo would leave the default width
    check_config_dict(CONFIG_MAPPING[model_type], spec, "net.backbone")
    config = AutoConfig.for_model(model_type, **spec, **legacy)
    config._attn_implementation = attn_implementation
    model = AutoModelForCausalLM.from_config(config)
    return model.to(_dtype(dtype)) if dtype else model


def build_audio_encoder(spec: str | dict, kind: str = "fun_asr_nano", dtype: str | None = None) -> nn.Module:
    """The frozen speech encoder: ``FunAsrNanoEncoder`` (SenseVoice SAN-M) or Whisper's encoder.

    ``spec`` may name a full checkpoint (``FunAudioLLM/Fun-ASR-Nano-2512-hf``,
    ``openai/whisper-large-v3``): only its encoder is kept.
    """
    if kind not in ENCODER_TYPES:
        raise ValueError(f"audio_encoder_type must be one of {ENCODER_TYPES}, got {kind!r}")
    if kind == "sense_voice":  # the release's SenseVoiceSmall: a dict config or a saved SenseVoiceEncoder
        from transformers.models.fun_asr_nano.configuration_fun_asr_nano import FunAsrNanoEncoderConfig

        from .sense_voice import SenseVoiceEncoder

        if isinstance(spec, dict):
            return SenseVoiceEncoder(FunAsrNanoEncoderConfig(**spec))
        return SenseVoiceEncoder.from_pretrained(spec, dtype=_dtype(dtype))
    if kind == "fun_asr_nano":
        from transformers.models.fun_asr_nano.configuration_fun_asr_nano import FunAsrNanoEncoderConfig
        from transformers.models.fun_asr_nano.modeling_fun_asr_nano import FunAsrNanoEncoder as Encoder

        config_cls = FunAsrNanoEncoderConfig
    else:
        from transformers import WhisperConfig as config_cls
        from transformers.models.whisper.modeling_whisper import WhisperEncoder as Encoder
    if isinstance(spec, dict):
        check_config_dict(config_cls, spec, "net.audio_encoder")
        return Encoder(config_cls(**spec))
    full = AutoConfig.from_pretrained(spec)
    if isinstance(full, config_cls) and full.model_type != "whisper":
        return Encoder.from_pretrained(spec, dtype=_dtype(dtype))
    from transformers import AutoModel

    model = AutoModel.from_pretrained(spec, dtype=_dtype(dtype))
    encoder = model.get_encoder() if kind == "whisper" else model.audio_tower
    return encoder


def encoder_width(encoder: nn.Module) -> int:
    cfg = encoder.config
    return getattr(cfg, "d_model", None) or cfg.hidden_size


def run_audio_encoder(
    encoder: nn.Module, features: torch.Tensor, lens: torch.Tensor, kind: str, host_lens: list[int] | None = None
) -> list[torch.Tensor]:
    """Encode a padded batch of clips; returns one [n_i, width] tensor per clip.

    ``lens`` (device) builds the padding mask; ``host_lens`` (the same counts as Python ints, from the
    collate) cut the outputs, so no count is read back from the device (``lens.tolist()`` when absent).

    For FunAsrNano ``n_i`` equals the number of LFR frames; for Whisper the features are
    padded to its fixed 30 s window and the first ``ceil(frames / 2)`` outputs are kept.
    SenseVoice (``sense_voice``) prepends its 4 query frames: ``n_i`` = LFR frames + 4.
    """
    if kind == "sense_voice":
        from .sense_voice import run_sense_voice

        return run_sense_voice(encoder, features, lens, host_lens)
    host_lens = lens.tolist() if host_lens is None else host_lens
    if kind == "fun_asr_nano":
        mask = (torch.arange(features.shape[1], device=features.device)[None] < lens[:, None]).long()
        hidden = encoder(input_features=features, input_features_mask=mask).last_hidden_state
        return [hidden[i, :n] for i, n in enumerate(host_lens)]
    window = encoder.config.max_source_positions * 2
    if features.shape[1] > window:
        raise ValueError(f"user speech of {features.shape[1]} mel frames exceeds Whisper's {window}-frame window")
    mel = torch.nn.functional.pad(features, (0, 0, 0, window - features.shape[1])).transpose(1, 2)
    hidden = encoder(input_features=mel).last_hidden_state
    return [hidden[i, : (n + 1) // 2] for i, n in enumerate(host_lens)]
