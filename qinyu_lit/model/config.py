"""What a ``QinYuModel`` is built from (the ``model.init_args.net`` block of a recipe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class QinYuConfig:
    """What to build. Strings are pretrained names or directories; dicts are configs of the same
    classes with random weights (``model_type`` picks the class).

    Args:
        backbone: causal LM, e.g. ``Qwen/Qwen3-8B``, or a config dict ``{model_type: qwen3, ...}``.
        tokenizer: tokenizer name or directory; must be the one the data module uses.
        audio_encoder: speech encoder checkpoint or config dict; ``None`` for a text-input model.
        audio_encoder_type: ``fun_asr_nano`` (SenseVoice SAN-M, 16.7 Hz), ``whisper``, or ``sense_voice``
            (the release's SenseVoiceSmall: the same SAN-M plus 4 prepended query frames, N + 4 outputs).
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
        token_layout: the prompt / token layout the model was trained on: ``qinyu`` (models trained here) or
            ``official`` (the released VITA-QinYu; ``qinyu-lit convert-official``), see docs/data.md.
        delay_pads: ``single``: one pad id (``codebook_size``) per codebook, ``codebook_size + 1`` rows;
            ``positional``: the release's pads ``codebook_size + k`` (k = 0..C-1), ``codebook_size + C`` rows.
        heads: ``separate`` (codebook-0 head extension + C-1 codebook heads) or ``shared`` (the release: the
            backbone's one ``lm_head`` over a vocabulary that holds the audio tokens; codebooks are its slices).
        speaker_projector: ``linear`` (D -> H) or ``mlp`` (the release: LayerNorm, Linear, GELU, Linear, no biases).
        adapter_bias: biases in the adapter's two Linear layers (the release's projector has none).
        loss: ``eq3`` (paper Eq. 3, per-position mean) or ``official`` (the release's code: CE over text and
            codebook 0 + the mean CE of codebooks 1..C-1 over audio positions), see docs/stages.md.
        loss_chunk_size: supervised positions whose logits are computed at once (``model/chunked_loss.py``):
            peak loss memory ~ chunk x vocabulary x 4 bytes a few times (512 x 152K: ~0.3 GB per fp32 copy).
        encoder_dropout_in_training: run the frozen audio encoder in train mode (its dropout on, still no
            gradient) while the model trains, as the release does (SenseVoice dropout 0.1); off: always eval.
    """

    backbone: str | dict = "Qwen/Qwen3-8B"
    tokenizer: str = "Qwen/Qwen3-8B"
    audio_encoder: str | dict | None = None
    audio_encoder_type: Literal["fun_asr_nano", "whisper", "sense_voice"] = "fun_asr_nano"
    num_codebooks: int = 8
    codebook_size: int = 1024
    speaker_dim: int = 192
    attn_implementation: str = "auto"
    dtype: str | None = None
    gradient_checkpointing: bool = False
    compile_layers: bool = False
    token_layout: Literal["qinyu", "official"] = "qinyu"
    delay_pads: Literal["single", "positional"] = "single"
    heads: Literal["separate", "shared"] = "separate"
    speaker_projector: Literal["linear", "mlp"] = "linear"
    adapter_bias: bool = True
    loss: Literal["eq3", "official"] = "eq3"
    loss_chunk_size: int = 512
    encoder_dropout_in_training: bool = False
