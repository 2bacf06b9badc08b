"""The evaluation numbers against hand-computed examples, and the batch bookkeeping they rely on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qinyu_lit.data.batch import collate
from qinyu_lit.eval.metrics import GenerationMetrics, Reference, normalize_text, per_task_losses, split_batch
from qinyu_lit.inference import layout_for
from qinyu_lit.prep.demo import demo_samples

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model(tiny_model):
    return tiny_model


def one(task: str, i: int = 0):
    gen = demo_samples(task, i + 1, 0, 16, 8, 64)
    for _ in range(i):
        next(gen)
    return next(gen)


def test_wer_and_cer_by_hand():
    m = GenerationMetrics()
    # "hello world" vs "hello big world": 1 deletion in 3 words; 4 deleted characters ("big ") of 15
    m.update_asr("Hello world", "hello, big World!")
    assert float(m.wer.compute()) == pytest.approx(1 / 3)
    assert float(m.cer.compute()) == pytest.approx(4 / 15)
    # corpus-level: errors and lengths add up over samples (not a mean of per-sample rates)
    m.update_asr("sun moon", "sun moon")
    m.update_asr("a b", "")  # an empty reference is skipped: WER is undefined for it
    assert float(m.wer.compute()) == pytest.approx((1 + 0) / (3 + 2))
    assert float(m.cer.compute()) == pytest.approx((4 + 0) / (15 + 8))


def test_normalize_text():
    assert normalize_text("  Hello,   WORLD! it's ") == "hello world it's"


def test_frames_per_text_token_by_hand():
    m = GenerationMetrics()
    m.update_speech(gen_frames=8, gen_tokens=4, ref_frames=12, ref_tokens=4)  # 2.0 vs 3.0: too fast
    m.update_speech(gen_frames=9, gen_tokens=3, ref_frames=9, ref_tokens=3)  # 3.0 vs 3.0: same pace
    m.update_speech(gen_frames=5, gen_tokens=5, ref_frames=0, ref_tokens=5)  # no reference speech: skipped
    assert float(m.gen_frames_per_token.compute()) == pytest.approx(2.5)
    assert float(m.ref_frames_per_token.compute()) == pytest.approx(3.0)
    assert float(m.frame_ratio.compute()) == pytest.approx((2 / 3 + 1) / 2)


def test_split_batch_returns_the_packed_sequences(model):
    layout = layout_for(model)
    seqs = [layout.build(one(t)) for t in ("sqa", "tts", "asr", "conversation", "text")]
    rows = [[seqs[0], seqs[1]], [seqs[2]], [seqs[3], seqs[4]]]  # packs, with user speech and speakers in each
    batch = collate(rows, layout.ids.pad, 8, pad_to=260)
    got = split_batch(batch, model.ids)
    assert [s.key for s in got] == [s.key for s in seqs]
    for a, b in zip(got, seqs, strict=True):
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.target_mask, b.target_mask)
        assert a.task == b.task
        for x, y in zip(a.speakers + a.audio_features, b.speakers + b.audio_features, strict=True):
            np.testing.assert_array_equal(x, y)


def test_reference_is_the_generation_prompt_and_the_supervised_reply(model):
    layout = layout_for(model)
    for task in ("asr", "tts", "conversation"):
        sample = one(task)
        ref = Reference.from_sequence(layout.build(sample), model.ids, 8)
        prompt = layout.build(sample, prompt_only=True)
        np.testing.assert_array_equal(ref.prompt.input_ids, prompt.input_ids)
        assert len(ref.prompt.speakers) == len(prompt.speakers)
        assert len(ref.prompt.audio_features) == len(prompt.audio_features)
        reply = sample.turns[-1]
        assert model.tokenizer.decode(ref.text_ids) == reply.text
        assert ref.num_frames == (0 if reply.codes is None else reply.codes.shape[1])
        assert ref.is_speech_to_text == (task == "asr")


def test_per_task_loss_is_the_training_loss_split_by_task(model):
    layout = layout_for(model)
    seqs = [layout.build(one("asr", i)) for i in range(2)] + [layout.build(one("tts", i)) for i in range(2)]
    batch = collate([[s] for s in seqs], layout.ids.pad, 8)
    with torch.no_grad():
        whole = model.loss(batch)
        by_task = per_task_losses(model, seqs, layout.ids.pad)
    assert sorted(by_task) == ["asr", "tts"]
    assert by_task["asr"].num_audio == 0 and by_task["tts"].num_audio > 0
    # Eq. 3 averages over supervised positions, so the tasks' losses weighted by their positions give it back
    n = {t: o.num_text + o.num_audio for t, o in by_task.items()}
    assert sum(n.values()) == whole.num_text + whole.num_audio
    combined = sum(float(o.loss) * n[t] for t, o in by_task.items()) / sum(n.values())
    assert math.isclose(combined, float(whole.loss), rel_tol=1e-5)
    assert float(by_task["asr"].text_correct + by_task["tts"].text_correct) == float(whole.text_correct)
