"""Shared fixtures: a small demo corpus on disk and a tiny model config of the real classes."""

from __future__ import annotations

import pytest
import torch

from qinyu_lit.model.qinyu import QinYuConfig, QinYuModel
from qinyu_lit.model.tiny import tiny_config
from qinyu_lit.prep.demo import make_demo_corpus


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """A small demo corpus: 4 train and 1 val samples per task, 16-d speakers, 8 x 64 codes."""
    return make_demo_corpus(tmp_path_factory.mktemp("demo"), samples_per_task=4, val_samples_per_task=1, samples_per_shard=8)


def make_tiny_net(demo_dir) -> QinYuConfig:
    """A 2-layer random Qwen3 + tiny FunAsrNanoEncoder on the demo tokenizer, 8 x 64 codes, 16-d speakers."""
    return tiny_config(demo_dir / "tokenizer")


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
