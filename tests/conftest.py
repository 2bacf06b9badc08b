"""Shared fixtures: a small demo corpus on disk and a tiny model config of the real classes."""

from __future__ import annotations

import pytest
import torch

from qinyu_lit.data.demo import make_demo_corpus
from qinyu_lit.model.qinyu import QinYuConfig, QinYuModel

TINY_BACKBONE = dict(
    model_type="qwen3",
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=768,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)
TINY_ENCODER = dict(
    hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, num_timestamp_prediction_layers=1
)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A small demo corpus: 4 train and 1 val samples per task, 16-d speakers, 8 x 64 codes."""
    return make_demo_corpus(tmp_path_factory.mktemp("demo"), samples_per_task=4, val_samples_per_task=1, samples_per_shard=8)


def make_tiny_net(demo_dir) -> QinYuConfig:
    """A 2-layer random Qwen3 + tiny FunAsrNanoEncoder on the demo tokenizer, 8 x 64 codes, 16-d speakers."""
    return QinYuConfig(
        backbone=dict(TINY_BACKBONE),
        tokenizer=str(demo_dir / "tokenizer"),
        audio_encoder=dict(TINY_ENCODER),
        num_codebooks=8,
        codebook_size=64,
        speaker_dim=16,
        attn_implementation="sdpa",
    )


@pytest.fixture
def tiny_net(demo_dir) -> QinYuConfig:
    return make_tiny_net(demo_dir)


@pytest.fixture
def tiny_model(tiny_net) -> QinYuModel:
    torch.manual_seed(0)
    return QinYuModel(tiny_net).eval()


@pytest.fixture(scope="module")
def one_thread():
    """Toy models only pay for a second thread on a busy machine; use with ``pytest.mark.usefixtures``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
