"""Tiny random configs of the real classes (Qwen3, FunAsrNanoEncoder) for tests, notebooks,
benchmarks and bug reports: a 2-layer model builds in well under a second on a CPU."""

from __future__ import annotations

from .config import QinYuConfig


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


TINY_ENCODER = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, num_timestamp_prediction_layers=1
)


def tiny_config(tokenizer: str, hidden_size: int = 64, num_layers: int = 2, audio_encoder: bool = True) -> QinYuConfig:
    """QinYu on a tiny random Qwen3 (+ tiny FunAsrNano encoder), 8 x 64 codes, 16-d speakers:
    the sizes of the demo corpus (``qinyu-lit demo-data``)."""
    return QinYuConfig(
        backbone=tiny_backbone(hidden_size, num_layers),
        tokenizer=str(tokenizer),
        audio_encoder=dict(TINY_ENCODER) if audio_encoder else None,
        num_codebooks=8,
        codebook_size=64,
        speaker_dim=16,
    )
