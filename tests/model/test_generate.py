"""Decoding: the sampling options, the KV cache, stopping, and inputs a checkpoint cannot take."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qinyu_lit.data.delay import delay
from qinyu_lit.data.schema import Turn
from qinyu_lit.inference import make_sample, prompt_batch, reply_to
from qinyu_lit.model.generate import generate
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.sampling import Sampler

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model(tiny_model):
    return tiny_model


@pytest.fixture
def prompt(model):
    return prompt_batch(model, make_sample(model, "hello world", speaker=np.ones(16, np.float32)))


# ---------------------------------------------------------------------------- Sampler


def test_greedy_settings_are_argmax():
    logits = torch.randn(7, 50)
    for sampler in (Sampler(), Sampler(temperature=0.0, top_k=5), Sampler(temperature=2.0, top_k=1)):
        assert torch.equal(sampler(logits), logits.argmax(-1))
    # a tiny nucleus keeps only the most likely id, so sampling from it is the argmax too
    assert torch.equal(Sampler(temperature=1.0, top_p=1e-6, seed=0)(logits), logits.argmax(-1))


def test_top_k_never_leaves_the_k_best():
    logits = torch.randn(4, 100)
    best3 = logits.topk(3, dim=-1).indices
    sampler = Sampler(temperature=5.0, top_k=3, seed=1)  # hot: without top-k it would roam all 100
    for _ in range(50):
        picked = sampler(logits)
        assert all(picked[i] in best3[i] for i in range(4))


def test_seeded_sampler_is_reproducible_and_seed_dependent():
    logits = torch.zeros(1000)  # uniform: every draw is up to the generator
    a = [int(Sampler(temperature=1.0, seed=3)(logits)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    s = Sampler(temperature=1.0, seed=3)
    draws = [int(s(logits)) for _ in range(5)]
    s.reset()
    assert [int(s(logits)) for _ in range(5)] == draws
    other = Sampler(temperature=1.0, seed=4)
    assert draws != [int(other(logits)) for _ in range(5)]


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(top_k=-2), dict(top_p=0.0), dict(top_p=1.5)])
def test_sampler_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        Sampler(**kwargs)


# ---------------------------------------------------------------------------- generate


def test_temperature_zero_and_top_k_one_match_greedy(model, prompt):
    ref = generate(model, prompt, max_new_positions=24)
    for text, audio in ((Sampler(0.0), Sampler(0.0)), (Sampler(1.5, top_k=1, seed=0), Sampler(1.5, top_k=1, seed=0))):
        out = generate(model, prompt, max_new_positions=24, pick_text=text, pick_audio=audio)
        assert out.text_ids == ref.text_ids and out.positions == ref.positions and torch.equal(out.codes, ref.codes)


def test_seeded_sampling_reproduces_a_reply(model, prompt):
    def run(seed):
        return generate(model, prompt, 24, Sampler(1.0, seed=seed), Sampler(1.0, top_p=0.9, seed=seed + 1))

    a, b, c = run(0), run(0), run(7)
    assert a.text_ids == b.text_ids and a.positions == b.positions and torch.equal(a.codes, b.codes)
    assert (a.text_ids, a.positions) != (c.text_ids, c.positions)  # a random 2-layer model: ~450-way choices


def _forced_modality(model, logits, audio: bool):
    # a random model rarely picks codebook-0 classes: force the modality, greedy within it
    if audio:
        return model.text_vocab + logits[model.text_vocab : model.text_vocab + 64].argmax()
    text = logits[: model.text_vocab].clone()
    text[model.ids.im_end] = -1e9
    return text.argmax()


def test_kv_cache_decoding_matches_full_recompute(model, prompt):
    """Each cached pick equals the pick from a full forward pass (no cache) over prompt + reply so far."""
    picks = []  # [head-0 choice, codebook 1..7 picks or None] per generated position

    def pick_text(logits):
        choice = _forced_modality(model, logits, audio=len(picks) % 3 != 0)  # text, audio, audio, text, ...
        picks.append([int(choice), None])
        return choice

    def pick_audio(logits):
        picks[-1][1] = logits.argmax(-1)
        return picks[-1][1]

    out = generate(model, prompt, max_new_positions=15, pick_text=pick_text, pick_audio=pick_audio)
    assert out.positions == ["t", "a", "a"] * 5
    ids, codes = prompt["input_ids"][0].tolist(), prompt["codes"][0].tolist()
    for choice, rest in picks:
        is_text = choice < model.text_vocab
        ids.append(choice if is_text else model.ids.frame)
        codes.append([-1] * 8 if is_text else [choice - model.text_vocab] + rest.tolist())
    full = dict(prompt, input_ids=torch.tensor([ids]), codes=torch.tensor([codes]))
    full["position_ids"] = torch.arange(len(ids))[None]
    with torch.no_grad():
        hidden = model.hidden_states(full)[0]
    first = prompt["input_ids"].shape[1] - 1  # the last prompt position predicts the first reply position
    for i, (choice, rest) in enumerate(picks):
        h = hidden[first + i]
        assert int(_forced_modality(model, model.head0_logits(h), audio=i % 3 != 0)) == choice, i
        if rest is not None:
            assert torch.equal(model.code_logits(h).argmax(-1), rest), i


def test_stops_at_im_end_and_undelays_the_frames(model, prompt):
    """Scripted heads: 2 text ids, then 3 frames as 10 delayed positions, then <|im_end|>."""
    frames = np.arange(24).reshape(8, 3) + 1  # [codebooks, frames]
    positions = delay(frames, 64).T  # [10, 8], 64 = the delay pad
    script = [5, 6] + [model.text_vocab + int(p[0]) for p in positions] + [model.ids.im_end, 9]
    steps, rests = iter(script), iter(torch.from_numpy(positions[:, 1:]))
    out = generate(model, prompt, 50, pick_text=lambda lg: torch.tensor(next(steps)), pick_audio=lambda lg: next(rests))
    assert out.finished
    assert out.positions == ["t", "t"] + ["a"] * 10
    assert out.text_ids == [5, 6]
    np.testing.assert_array_equal(out.codes.numpy(), frames)
    assert out.frames_per_text_token == 1.5
    assert next(steps) == 9  # nothing was asked for after <|im_end|>


def test_max_new_positions_leaves_the_reply_unfinished(model, prompt):
    out = generate(model, prompt, 5, pick_text=lambda lg: torch.tensor(5))
    assert not out.finished and out.text_ids == [5] * 5


def test_generate_restores_training_mode(model, prompt):
    model.train()
    generate(model, prompt, 2)
    assert model.training
    assert not model.audio_encoder.training  # frozen encoder stays in eval whatever the mode


# ---------------------------------------------------------------------------- inputs


def test_user_speech_without_an_encoder_is_a_clear_error(tiny_net):
    model = QinYuModel(dataclasses.replace(tiny_net, audio_encoder=None))
    wav = (np.sin(np.arange(8000) / 10) * 0.3).astype(np.float32)
    with pytest.raises(ValueError, match="no audio encoder"):
        reply_to(model, audio=(wav, 16000))


def test_wrong_speaker_dimension_is_a_clear_error(model):
    with pytest.raises(ValueError, match="dimension 16 .net.speaker_dim"):
        reply_to(model, text="hello", speaker=np.ones(192, np.float32))
    with pytest.raises(ValueError, match="user speaker|dimension 16"):
        reply_to(model, text="hello", user_speaker=np.ones(8, np.float32))


def test_stack_of_utterance_embeddings_is_averaged(model, tmp_path):
    voices = np.stack([np.zeros(16), np.full(16, 2.0)]).astype(np.float32)
    np.save(tmp_path / "voice.npy", voices)
    sample = make_sample(model, "hi", speaker=str(tmp_path / "voice.npy"))
    np.testing.assert_array_equal(sample.agent_speaker, np.ones(16, np.float32))


def test_history_keeps_assistant_text_and_drops_its_speech(model):
    codes = np.arange(8 * 6).reshape(8, 6) % 64
    history = [Turn("user", "hello world"), Turn("assistant", "world hello", codes=codes)]
    batch = prompt_batch(model, make_sample(model, "music river", history=history))
    assert (batch["codes"] < 0).all()  # no audio frame in the prompt
    text = model.tokenizer.decode(batch["input_ids"][0])
    assert "world hello" in text and "music river" in text
    assert text.rstrip().endswith("assistant")


def test_multi_row_prompt_is_rejected(model, prompt):
    two = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) and v.dim() == 2 else v for k, v in prompt.items()}
    with pytest.raises(ValueError, match="single prompt"):
        generate(model, two)
