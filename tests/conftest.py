"""Shared fixtures: a small demo corpus on disk, a tiny model config of the real classes, and the README's
first command run once (``readme_demo``: the trained tiny SFT demo that several slow tests start from)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

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


ROOT = Path(__file__).resolve().parents[1]


def qinyu_lit_in(cwd: Path, *args: str) -> str:
    """Run ``qinyu-lit ARGS`` (the installed entry point's module) in ``cwd`` as a user does; its output."""
    code = "import sys; from qinyu_lit.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, f"qinyu-lit {' '.join(args)} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def readme_first_command() -> list[list[str]]:
    """The ``qinyu-lit`` steps of the README's first command (the set-up steps before them are CI's)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```bash\n", 1)[1].split("```", 1)[0]
    steps = [shlex.split(part) for part in block.replace("\\\n", " ").strip().split(" && ")]
    return [step[1:] for step in steps if step[0] == "qinyu-lit"]


@pytest.fixture(scope="session")
def readme_demo(tmp_path_factory):
    """SLOW (~3.5 minutes on 2 idle cores), run once per session: a fresh folder (a clone's recipes only)
    after the README's first command, step by step. Returns (folder, tiny SFT last.ckpt, each step's output).
    Tests that start from the trained demo (test_demo.py, test_persona_demo.py) share it."""
    work = tmp_path_factory.mktemp("newcomer")
    shutil.copytree(ROOT / "recipes", work / "recipes")
    steps = readme_first_command()
    assert [s[0] for s in steps] == ["demo-data", "fit", "generate"], steps  # data, training, the reply
    logs = [qinyu_lit_in(work, *step) for step in steps]
    return work, work / "checkpoints" / "tiny_sft" / "last.ckpt", logs  # the recipe's fixed dirpath
