"""The evaluation's per-sample scores: identity checks and known answers."""

from __future__ import annotations

import numpy as np
import pytest

from qinyu_lit.codec import DemoRuleCodec
from qinyu_lit.eval.scoring import (
    answer_scores,
    pitch_dtw,
    pitch_mse,
    speaker_similarity,
    text_errors,
    track_f0,
)
from qinyu_lit.prep.demo import agent_embedding, demo_codes
from qinyu_lit.prep.demo_eval import DemoASR, DemoVoiceEncoder, recognise

RATE = 16000


def tone(freq: float, seconds: float = 0.5) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def test_wer_and_cer_are_zero_for_the_reference_itself_after_normalising():
    assert text_errors("He hoped there would be stew, for dinner!", "he hoped there would be stew for dinner") == (0, 8)
    assert text_errors("今天天气很好。", "今天天气很好", "zh") == (0, 6)


def test_wer_counts_word_edits_and_chinese_is_scored_per_character():
    assert text_errors("the cat sat on the mat", "the cat sit on mat") == (2, 6)  # a substitution, a deletion
    assert text_errors("今天天气很好", "今天天汽好", "zh") == (2, 6)  # one substitution, one deletion: characters
    assert text_errors("今天天气很好", "今天天汽好") == (2, 6)  # Chinese characters are found without --language


def test_qa_exact_and_contains():
    assert answer_scores("cold moon", "Cold moon.") == (True, True)
    assert answer_scores("cold", "it is cold today") == (False, True)
    assert answer_scores("cold", "colder") == (False, False)  # whole words only


def test_a_voice_compared_with_itself_has_similarity_one():
    vec = np.random.default_rng(0).standard_normal(192)
    assert speaker_similarity(vec, vec) == pytest.approx(1.0, abs=1e-6)
    assert speaker_similarity(vec, -vec) == pytest.approx(-1.0, abs=1e-6)
    wav = DemoRuleCodec().decode(demo_codes("hot sun", 1))
    enc = DemoVoiceEncoder(16)
    assert speaker_similarity(enc.embed(wav, RATE), enc.embed(wav, RATE)) == pytest.approx(1.0, abs=1e-6)


def test_a_220_hz_tone_is_tracked_at_220_hz():
    f0 = track_f0(tone(220.0), RATE)
    assert np.isfinite(f0).mean() > 0.9
    assert abs(np.nanmedian(f0) - 220.0) / 220.0 < 0.02


def test_silence_is_unvoiced():
    f0 = track_f0(np.concatenate([tone(300.0, 0.3), np.zeros(RATE // 2, np.float32)]), RATE)
    assert np.isnan(f0[-20:]).all() and np.isfinite(f0[:20]).all()


def test_pitch_mse_and_dtw_are_zero_for_an_exact_reconstruction_and_not_for_another_melody():
    melody = np.concatenate([tone(f, 0.2) for f in (220, 330, 262, 392)])
    f0 = track_f0(melody, RATE)
    assert pitch_mse(f0, f0) == 0.0 and pitch_dtw(f0, f0) == 0.0
    transposed = track_f0(np.concatenate([tone(f * 1.5, 0.2) for f in (220, 330, 262, 392)]), RATE)
    assert pitch_mse(f0, transposed) < 0.01  # the key is normalised away: the same melody
    other = track_f0(np.concatenate([tone(f, 0.2) for f in (392, 220, 330, 220)]), RATE)
    assert pitch_mse(f0, other) > 0.05 and pitch_dtw(f0, other) > 0.05


def test_the_demo_asr_inverts_the_demo_codec_and_names_the_voice():
    for voice in (0, 1, 2):
        wav = DemoRuleCodec().decode(demo_codes("hot sun black day", voice))
        assert recognise(wav, RATE) == ("hot sun black day", voice)
    assert DemoASR().transcribe(np.zeros(RATE, np.float32), RATE) == ""  # no word explains silence
    assert np.array_equal(DemoVoiceEncoder(16).embed(wav, RATE), agent_embedding(2, 16))
