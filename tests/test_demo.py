"""The README's first command, run as a newcomer runs it, ends with a model that does the demo's job.

SLOW (about 4 minutes on 2 idle CPU cores, shared with tests/test_persona_demo.py through the session
fixture ``readme_demo`` in conftest.py): this is the exact README command - ``demo-data``
then ``fit`` with the unchanged ``recipes/tiny/sft.yaml`` - followed by the README's ``generate``
example. It checks what a student is promised: the spoken demo question gets the rule's answer
with speech frames and a WAV, and the validation replies are mostly right.
Deselect it with ``-k 'not readme_demo'`` for a quick run.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from qinyu_lit.data.mixture import expand_shards
from qinyu_lit.data.schema import decode_sample
from qinyu_lit.data.tar import iter_raw_samples
from qinyu_lit.inference import load_model, reply_to
from qinyu_lit.prep.demo import DEMO_QUESTION, DemoRuleCodec, answer, demo_codes


@pytest.fixture(scope="module")
def readme_run(readme_demo):
    """The README's first command, run once per session (``conftest.readme_demo``)."""
    return readme_demo


def test_readme_demo_prints_loss_as_it_trains(readme_run):
    _, _, logs = readme_run
    assert "train/loss=" in logs[1]  # Lightning's progress bar, refreshed every few steps


def test_readme_demo_generate_answers_the_demo_question_with_speech_and_a_wav(readme_run):
    work, ckpt, logs = readme_run
    out = logs[2]  # the README's generate step
    expected = answer(DEMO_QUESTION)
    assert f"text: {expected}" in out, out
    assert (work / "reply.txt").read_text().strip() == expected, out
    codes = np.load(work / "reply.npy")
    assert codes.shape[0] == 8 and codes.shape[1] > 0
    # the speech has about the pace of the rule's codes for the answer (measured: 5 frames for 4)
    assert 0.5 <= codes.shape[1] / demo_codes(expected, 0).shape[1] <= 2
    wav, rate = soundfile.read(work / "reply.wav")
    assert rate == DemoRuleCodec.sample_rate and len(wav) == codes.shape[1] * rate // 12.5


def test_readme_demo_answers_most_validation_samples(readme_run, monkeypatch):
    """Greedy replies to the held-out validation samples: text exactly right, speech codes exactly right."""
    work, ckpt, _ = readme_run
    monkeypatch.chdir(work)  # the checkpoint names its tokenizer relative to where fit ran (issue 13, paths)
    model = load_model(str(ckpt))
    text_ok, speech_ok, speech_n, n = 0, 0, 0, 0
    for raw in iter_raw_samples(expand_shards(str(work / "data/demo/val"))):
        sample = decode_sample(raw)
        ref, reply = sample.turns[-1], reply_to(model, sample=sample, max_new_positions=200)
        n += 1
        text_ok += reply.text.strip() == ref.text
        if ref.codes is not None:
            speech_n += 1
            speech_ok += reply.codes.shape == ref.codes.shape and bool((reply.codes.numpy() == ref.codes).all())
    # measured (seed 0, 2 threads): 21/28 texts exactly right, 5/16 speech replies right in all 8 codebooks
    assert text_ok / n >= 0.7, f"{text_ok}/{n} validation replies have the right text"
    assert speech_ok >= 2, f"{speech_ok}/{speech_n} validation replies have the right speech codes"


# ---------------------------------------------------------------------------- fast: what the demo ships


def test_demo_data_ships_the_voice_and_the_question_the_readme_uses(demo_dir):
    from qinyu_lit.data.audio import read_audio
    from qinyu_lit.prep.demo import SAMPLE_RATE, agent_embedding, demo_speech

    voice = np.load(demo_dir / "voice.npy")
    np.testing.assert_array_equal(voice, agent_embedding(0, 16))  # the agent voice 0 the samples carry
    wav, rate = read_audio(demo_dir / "question.wav")
    assert rate == SAMPLE_RATE
    np.testing.assert_allclose(wav, demo_speech(DEMO_QUESTION, 0), atol=1e-4)  # 16-bit WAV rounding


def test_the_demo_answer_rule_maps_every_word_to_its_opposite_and_back():
    from qinyu_lit.prep.demo import WORDS

    assert len(set(WORDS)) == 16
    assert answer(answer(" ".join(WORDS))) == " ".join(WORDS)
    assert all(a != w for a, w in zip(answer(" ".join(WORDS)).split(), WORDS, strict=True))
    assert answer("Hot sun") == "cold moon"


def test_demo_codec_plays_one_80ms_tone_per_frame_pitched_by_codebook_0():
    codec = DemoRuleCodec()
    codes = demo_codes("cold moon", 0)
    wav = codec.decode(codes)
    n = codec.sample_rate * 2 // 25  # 80 ms at 16 kHz
    assert wav.dtype == np.float32 and len(wav) == codes.shape[1] * n
    for f in (0, codes.shape[1] - 1):  # the strongest frequency of each frame is its code's pitch
        spectrum = np.abs(np.fft.rfft(wav[f * n : (f + 1) * n]))
        assert abs(np.argmax(spectrum) * codec.sample_rate / n - (200 + 15 * int(codes[0, f]))) <= codec.sample_rate / n
    assert len(codec.decode(np.zeros((8, 0), np.int64))) == 0
