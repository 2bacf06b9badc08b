"""Core-Cocktail against forgetting, on a tiny model (Fun-Audio-Chat; issue 21, docs/merge_and_dpo.md).

M0, the "base": the tiny pretrain recipe trained on a text task the demo corpus does not have (reply each
word's successor in the demo's word list: "sun black" -> "day left"). Both arms then fine-tune M0 on the
demo's speech tasks (ASR, TTS, speech QA, spoken conversation) for the same number of optimizer steps,
through ``qinyu-lit fit`` and the tiny cocktail recipes:

* stage 1 alone: ``recipes/tiny/cocktail_stage1.yaml`` for ``STEPS`` steps;
* cocktail: the same recipe for ``STAGE1_STEPS`` steps, ``qinyu-lit merge`` with M0 at alpha 0.5, then
  ``recipes/tiny/cocktail_stage2.yaml`` (ten times lower LR) from the merge for the remaining steps.

Both are measured on held-out samples by the stages' own validation (``val_task/<task>_<kind>_acc``,
teacher-forced next-position accuracy, as ``qinyu-lit validate`` logs it): the base task's accuracy, and
the speech tasks' accuracy (the mean of their text and audio accuracies).
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest

from qinyu_lit.cli import main
from qinyu_lit.data.datamodule import QinYuDataModule
from qinyu_lit.data.schema import CodecInfo, Sample, Turn
from qinyu_lit.prep.demo import WORDS, make_demo_corpus
from qinyu_lit.prep.writer import write_shards
from qinyu_lit.stages import SFTStage
from qinyu_lit.stages.merge import load_any

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"
SPEECH_TASKS = ("asr", "tts", "sqa", "conversation")
# the validation metrics of those tasks: ASR and speech QA reply in text, TTS and conversation in text + speech
SPEECH_METRICS = ("asr_text_acc", "sqa_text_acc", "tts_text_acc", "tts_audio_acc",
                  "conversation_text_acc", "conversation_audio_acc")  # fmt: skip
STEPS, STAGE1_STEPS = 300, 250  # both arms: 300 optimizer steps; the cocktail's stage 2 gets the last 50


def successor(question: str) -> str:
    """The base task's answer: each word replaced by the next one in ``WORDS`` (the demo answers its opposite)."""
    return " ".join(WORDS[(WORDS.index(w) + 1) % len(WORDS)] for w in question.split())


def text_task(out_dir: Path, count: int, seed: int) -> None:
    """``count`` samples of the base task (task ``text``: no speech anywhere) as schema shards."""
    rng = np.random.default_rng(seed)
    codec = CodecInfo("demo-rule", 8, 64, 12.5, 16000)  # no codes here; the demo's codec, as the index wants one
    samples = []
    for i in range(count):
        question = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 3))))
        turns = [Turn("user", question), Turn("assistant", successor(question))]
        samples.append(Sample(f"next{seed:02d}{i:05d}", "text", turns, codec))
    write_shards(samples, out_dir, samples_per_shard=256)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cocktail")
    make_demo_corpus(root / "speech", samples_per_task=128, val_samples_per_task=16, samples_per_shard=128,
                     tasks=SPEECH_TASKS)  # fmt: skip
    text_task(root / "base" / "train", 512, seed=0)
    text_task(root / "base" / "val", 64, seed=1)
    return root


def fit(recipe: str, out: Path, train: Path, steps: int, init_from: str, tokenizer: Path, *more: str) -> Path:
    """``qinyu-lit fit --config recipes/tiny/RECIPE`` on ``train`` for ``steps`` steps; its last.ckpt.
    Quiet and without validation; one checkpoint callback in ``out`` replaces the recipe's (./checkpoints/...)."""
    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(out), "save_last": True, "save_top_k": 0}}  # fmt: skip
    main(["fit", "--config", str(RECIPES / recipe), "--trainer.max_steps", str(steps),
          "--trainer.default_root_dir", str(out), "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", "--trainer.limit_val_batches", "0",
          "--trainer.callbacks", json.dumps([checkpoint]), "--model.init_args.init_from", init_from,
          "--model.init_args.val_generate", "0", "--data.init_args.train", str(train), "--data.init_args.val", "null",
          "--data.init_args.tokenizer", str(tokenizer), "--data.init_args.num_workers", "0", *more])  # fmt: skip
    return out / "last.ckpt"


def accuracies(path: Path, corpus: Path) -> dict[str, float]:
    """Held-out base-task and speech-task accuracy of a checkpoint or export (the stage's validation)."""
    model = load_any(path).eval()
    stage = SFTStage(model.config, val_generate=0)
    stage.model = model
    data = QinYuDataModule(val=[str(corpus / "base" / "val"), str(corpus / "speech" / "val")],
                           tokenizer=str(corpus / "speech" / "tokenizer"), codebook_size=64, batch_size=32,
                           shuffle_buffer=0)  # fmt: skip
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    logged = trainer.validate(stage, datamodule=data, verbose=False)[0]
    speech = [float(logged[f"val_task/{name}"]) for name in SPEECH_METRICS]
    return {"base": float(logged["val_task/text_text_acc"]), "speech": sum(speech) / len(speech)}


@pytest.mark.usefixtures("one_thread")
def test_cocktail_keeps_more_of_the_base_task_at_the_same_step_count(corpus, tmp_path):
    tokenizer, speech = corpus / "speech" / "tokenizer", corpus / "speech" / "train"
    # M0: the tiny pretrain recipe from a random model, in batches of 16 like the cocktail recipes (its 8 leave
    # M0 short of the task in 200 steps)
    base = corpus / "base" / "train"
    m0 = fit("pretrain.yaml", tmp_path / "m0", base, 200, "null", tokenizer, "--data.init_args.batch_size", "16")
    alone = fit("cocktail_stage1.yaml", tmp_path / "alone", speech, STEPS, str(m0), tokenizer)
    stage1 = fit("cocktail_stage1.yaml", tmp_path / "stage1", speech, STAGE1_STEPS, str(m0), tokenizer)
    merged = tmp_path / "merged"
    main(["merge", "--base", str(m0), "--tuned", str(stage1), "--alpha", "0.5", "--out", str(merged)])
    cocktail = fit("cocktail_stage2.yaml", tmp_path / "stage2", speech, STEPS - STAGE1_STEPS, str(merged), tokenizer)
    acc = {name: accuracies(path, corpus) for name, path in
           [("M0", m0), ("stage 1 alone", alone), ("merge", merged), ("cocktail", cocktail)]}  # fmt: skip
    for name, a in acc.items():
        print(f"{name:>14}: base task {a['base']:.3f}, speech tasks {a['speech']:.3f}")
    assert acc["M0"]["base"] > 0.95  # M0 knows the base task, so there is something to forget
    assert acc["stage 1 alone"]["base"] < 0.5 * acc["M0"]["base"]  # and stage 1 alone does forget it
    assert acc["cocktail"]["base"] > acc["stage 1 alone"]["base"] + 0.05
    assert acc["cocktail"]["speech"] >= 0.9 * acc["stage 1 alone"]["speech"]
