"""Decoding by the released VITA-QinYu's rules (``token_layout: official``) on a tiny shared-head model.

The model's lm_head weights are zeroed and a forward hook adds a scripted logit vector per step,
so each rule decides a known outcome: the real model, decoder and KV cache run underneath.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qinyu_lit.data.delay import delay
from qinyu_lit.data.tokenizer import official_demo_tokenizer
from qinyu_lit.inference import layout_for, make_sample, prompt_batch
from qinyu_lit.model.generate import _choose, generate
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.tiny import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")
C, K = 8, 16
R = K + C  # rows per codebook: codes + positional pads


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    tok = official_demo_tokenizer(tmp_path_factory.mktemp("official_tok"), K)
    cfg = dataclasses.replace(
        tiny_config(tok, audio_encoder=False),
        codebook_size=K,
        token_layout="official",
        heads="shared",
        delay_pads="positional",
    )
    torch.manual_seed(0)
    m = QinYuModel(cfg).eval()
    with torch.no_grad():
        m.backbone.get_output_embeddings().weight.zero_()  # logits = the script alone
    return m


class Script:
    """Step s's full-vocabulary logits: 0 everywhere but the entries ``steps[s]`` sets (the last repeats)."""

    def __init__(self, model, steps):
        self.model, self.steps, self.step = model, steps, -1
        self.hooks = [
            model.backbone.get_decoder().register_forward_pre_hook(self._advance),  # one decoder call per step
            model.backbone.get_output_embeddings().register_forward_hook(self._logits),
        ]

    def _advance(self, *_):
        self.step += 1

    def _logits(self, _module, _inputs, out):
        bias = torch.zeros(out.shape[-1])
        for token, value in self.steps[min(self.step, len(self.steps) - 1)].items():
            bias[token] = value
        return out + bias

    def __enter__(self):
        return self

    def __exit__(self, *_):
        for h in self.hooks:
            h.remove()


def tid(model, token: str) -> int:
    return model.tokenizer.convert_tokens_to_ids(token)


def audio(model, i: int, v: int) -> int:
    return model.ids.audio_base + R * i + v


def frame_step(model, values, score=3.0):
    return {audio(model, i, int(v)): score for i, v in enumerate(values)}


def run(model, steps, **kw):
    prompt = prompt_batch(model, make_sample(model, "Hello"), layout_for(model))
    with Script(model, steps):
        return generate(model, prompt, **kw)


def test_the_prompt_follows_the_official_layout(model):
    prompt = prompt_batch(model, make_sample(model, "Hello"), layout_for(model))
    names = model.tokenizer.convert_ids_to_tokens(prompt["input_ids"][0].tolist())
    assert names[:3] == ["<|im_start|>", "user", "Ċ"] and names[-3:] == ["<|im_start|>", "assistant", "Ċ"]


def test_codebook_1_to_7_are_left_out_of_the_text_or_codebook_0_choice(model):
    x, im_end = tid(model, "Hello"), model.ids.im_end
    # the highest logit is codebook 1's value 3: it cannot be the pick; the text token is
    out = run(model, [{audio(model, 1, 3): 9.0, x: 4.0, audio(model, 0, 2): 1.0}, {im_end: 1.0}])
    assert out.text_ids == [x] and out.positions == ["t"] and out.finished
    # when codebook 0 wins, the codebook-1 slice gives that frame's codebook 1
    steps = [{**frame_step(model, [2] * C), audio(model, 1, 3): 9.0}]
    steps += [{**frame_step(model, [K] * C), audio(model, 1, 4): 9.0}]  # codebook 1's frame 0 comes 1 step later
    steps += [frame_step(model, [K + p] * C) for p in range(1, 7)]
    out = run(model, steps + [{im_end: 1.0}])
    assert out.positions == ["a"] * 8 and out.codes[:2, 0].tolist() == [2, 4]


def test_repetition_penalty_counts_each_of_the_last_5_codebook_0_classes(model):
    head0 = model.shared.head0
    v = lambda value: audio(model, 0, value)  # noqa: E731
    x = tid(model, "Hello")

    def pick(full: dict, history: list[int], base: float = 0.0):
        logits = torch.full((model.backbone.get_output_embeddings().out_features,), base)
        for token, value in full.items():
            logits[token] = value
        frames = [torch.tensor([h] + [0] * (C - 1)) for h in history]
        return _choose(model, head0(logits), frames, lambda t: t.argmax(-1), 1.1)

    assert pick({v(5): 2.0, v(6): 1.7}, [5]) == (True, 5)  # 2.0 / 1.1 = 1.82 > 1.7
    assert pick({v(5): 2.0, v(6): 1.7}, [5, 5]) == (True, 6)  # twice in the window: 2.0 / 1.21 = 1.65
    assert pick({v(5): 2.0, v(6): 1.7}, [5, 5, 1, 2, 3, 4]) == (True, 5)  # one of them left the window of 5
    assert pick({v(5): 2.0, x: 1.9}, [5]) == (False, x)  # the second look may choose text
    assert pick({v(5): 2.0, x: 1.95}, []) == (True, 5)  # no frame yet: no second look
    assert pick({v(5): -1.0, v(6): -1.05}, [5], base=-5.0) == (True, 6)  # negative: multiplied, -1.1 < -1.05
    # the second look covers text + codebook 0 only: ids above the audio block (here <|user_speaker|>,
    # 1.9 > the penalised 1.82) are not in it, and the codebook 1..7 block is never in either look
    assert pick({v(5): 2.0, model.ids.user_speaker: 1.9, audio(model, 3, 1): 50.0}, [5]) == (True, 5)


def test_repetition_penalty_in_the_decoding_loop(model):
    im_end = model.ids.im_end
    twice = [frame_step(model, [5] * C), frame_step(model, [5] * C)]
    third = {**frame_step(model, [5] * C, 2.0), audio(model, 0, 6): 1.7}
    out = run(model, twice + [third] + [frame_step(model, [K + p] * C, 5.0) for p in range(7)] + [{im_end: 1.0}])
    assert out.codes[0].tolist() == [5, 5, 6]
    plain = run(model, twice + [third] + [frame_step(model, [K + p] * C, 5.0) for p in range(7)] + [{im_end: 1.0}], repetition_penalty=1.0)
    assert plain.codes[0].tolist() == [5, 5, 5]


def test_up_to_1024_positions_by_default(model):
    out = run(model, [{tid(model, "Hello"): 1.0}])
    assert len(out.positions) == 1024 and not out.finished


def test_end_of_conv_is_stripped_from_the_text(model):
    x, eoc = tid(model, "Hello"), model.ids.end_of_conv
    out = run(model, [{x: 1.0}, {eoc: 1.0}, {model.ids.im_end: 1.0}])
    assert out.text_ids == [x, eoc] and out.text == "Hello"


def test_frames_are_undelayed_with_positional_pads_and_pads_become_0(model):
    codes = np.array([[3, 7, 1], [4, 2, 9], [5, 5, 5], [0, 1, 2], [15, 14, 13], [6, 6, 6], [8, 9, 10], [11, 12, 1]])
    delayed = delay(codes, K, pads="positional")  # [8, 10]
    stray = delayed.copy()
    stray[0, 1] = K + 3  # the model speaks a pad where codebook 0's code 1 should be
    for positions, expected in ((delayed, codes), (stray, np.where(np.arange(3) == 1, 0, codes[0]))):
        text = {tid(model, "Hello"): 1.0}
        steps = [text] + [frame_step(model, positions[:, k]) for k in range(positions.shape[1])] + [{model.ids.im_end: 1.0}]
        out = run(model, steps)
        assert out.positions == ["t"] + ["a"] * 10 and out.finished
        got = out.codes.numpy()
        assert got.shape == (8, 3) and got[0].tolist() == np.asarray(expected).reshape(-1, 3)[0].tolist()
        np.testing.assert_array_equal(got[1:], codes[1:])


def test_a_converted_release_answers_speech_through_layout_for(tmp_path):
    from qinyu_lit.cli import main
    from qinyu_lit.inference import reply_to
    from qinyu_lit.model.tiny import write_tiny_release

    release = write_tiny_release(tmp_path / "release", codebook_size=K)
    main(["convert-official", str(release), str(tmp_path / "export")])
    converted = QinYuModel.from_pretrained(str(tmp_path / "export"), dtype="float32").eval()
    layout = layout_for(converted)
    assert layout.profile == "official" and layout.front_end.num_mel_bins * 7 == converted.audio_encoder.config.input_size
    wav = (0.3 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 300)).astype(np.float32)  # 98 fbank frames
    voice = np.ones(converted.config.speaker_dim, np.float32)
    sample = make_sample(converted, "", audio=(wav, 16000), speaker=voice, user_speaker=voice)
    ids = prompt_batch(converted, sample)["input_ids"][0]
    assert int((ids == converted.ids.audio).sum()) == 17 + 4  # ceil(98 / 6) LFR frames + 4 query frames
    reply = reply_to(converted, sample=sample, max_new_positions=12)  # the encoder fills every placeholder
    assert len(reply.positions) == 12 or reply.finished
