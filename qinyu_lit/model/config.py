"""What a ``QinYuModel`` is built from (the ``model.init_args.net`` block of a recipe)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class QinYuConfig:
    """What to build. Strings are pretrained names or directories; dicts are configs of the same
    classes with random weights (``model_type`` picks the class).

    Args:
        backbone: causal LM, e.g. ``Qwen/Qwen3-8B``, or a config dict ``{model_type: qwen3, ...}``.
        tokenizer: tokenizer name or directory; must be the one the data module uses.
        audio_encoder: speech encoder checkpoint or config dict; ``None`` for a text-input model.
        audio_encoder_type: ``fun_asr_nano`` (SenseVoice SAN-M, 16.7 Hz) or ``whisper``.
        num_codebooks: audio codebooks per frame (XY-Tokenizer and Mimi at 8).
        codebook_size: codes per codebook (XY-Tokenizer 1024, Mimi 2048); pad id = codebook_size.
        speaker_dim: speaker embedding size (CAM++: 192).
        attn_implementation: ``auto`` (``qinyu_varlen`` on CUDA - torch's varlen flash kernel, packed samples
            kept apart, nothing to install - and ``sdpa`` on CPU), or ``qinyu_varlen``, ``sdpa``, ``eager``,
            ``flash_attention_2`` / ``flash_attention_3`` (needs the flash-attn package).
        dtype: weight dtype at load time (``bfloat16`` for large models), ``None`` keeps float32.
        gradient_checkpointing: recompute backbone activations in backward (saves memory, ~30% slower).
        compile_layers: ``torch.compile`` each decoder layer (fuses the norms, casts and activations; the
            first steps pay the compilation). Off by default; GPU only in practice.
    """

    backbone: str | dict = "Qwen/Qwen3-8B"
    tokenizer: str = "Qwen/Qwen3-8B"
    audio_encoder: str | dict | None = None
    audio_encoder_type: str = "fun_asr_nano"
    num_codebooks: int = 8
    codebook_size: int = 1024
    speaker_dim: int = 192
    attn_implementation: str = "auto"
    dtype: str | None = None
    gradient_checkpointing: bool = False
    compile_layers: bool = False
