"""The one registry of tiny random configs of the real classes, for tests, notebooks, benchmarks,
the tiny recipes and bug reports: plain dicts of ``transformers`` config fields (no imports, so every
layer may use them). A 2-layer model of these builds in well under a second on a CPU.

    backbone      Qwen3 (``tiny_backbone``)          audio encoders   FunAsrNanoEncoder, Whisper encoder
    codec         MimiModel (``--codec tiny-mimi``)  speaker encoder  WavLMForXVector (16-d x-vectors)

``qinyu_lit.model.tiny.tiny_config`` composes them into a ``QinYuConfig`` of the demo corpus' sizes.
``recipes/tiny/*.yaml`` use the same classes, a little wider so that the demo learns its tasks.
"""

from __future__ import annotations


def tiny_backbone(hidden_size: int = 64, num_layers: int = 2, vocab_size: int = 768) -> dict:
    """A random Qwen3 (the paper's backbone class) of the given width and depth."""
    heads = max(hidden_size // 16, 2) if hidden_size < 128 else max(hidden_size // 64, 2)
    return dict(
        model_type="qwen3",
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2 if hidden_size < 128 else hidden_size * 3,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(heads // 2, 1),
        head_dim=hidden_size // heads,
        vocab_size=vocab_size,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
    )


# FunAsrNanoEncoder (SenseVoice SAN-M), 80 mel bins x 7 stacked frames in
TINY_FUN_ASR_NANO = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, num_timestamp_prediction_layers=1
)

# Whisper's encoder (``audio_encoder_type: whisper``)
TINY_WHISPER = dict(
    d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, num_mel_bins=80,
    max_source_positions=100, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=100,
)  # fmt: skip

# MimiModel: a small random codec (~0.4M parameters). Mimi's grouped upsampling conv needs
# upsample_groups == hidden_size.
TINY_MIMI = dict(
    hidden_size=32,
    upsample_groups=32,
    num_filters=8,
    num_hidden_layers=1,
    intermediate_size=64,
    num_attention_heads=2,
    num_key_value_heads=2,
    head_dim=16,
    codebook_size=64,
    codebook_dim=16,
    vector_quantization_hidden_dimension=16,
    num_quantizers=8,
)

# WavLMForXVector with 320x downsampling like the real one (50 frames/s); 16-d x-vectors, the demo's speaker_dim
TINY_WAVLM = dict(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=[16, 16, 16],
    conv_kernel=[10, 8, 8], conv_stride=[5, 8, 8], num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    tdnn_dim=[16, 16], tdnn_kernel=[5, 1], tdnn_dilation=[1, 1], xvector_output_dim=16, num_buckets=32,
    max_bucket_distance=100,
)  # fmt: skip
TINY_TEXT_ENCODER = tiny_backbone(hidden_size=64, num_layers=2)  # VoiceDesign text encoder: Qwen3 (Qwen3-Embedding class)
