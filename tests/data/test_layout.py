"""Pins the exact token layout of one sample of each task type."""

import numpy as np
import pytest

from qinyu_lit.data.delay import delay
from qinyu_lit.data.features import FbankLFR
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.schema import CodecInfo, Sample, SampleError, Turn
from qinyu_lit.data.tokenizer import load_tokenizer

C, K, PAD = 8, 64, 64
CODEC = CodecInfo("test", C, K, 12.5, 16000)
SR = 16000


@pytest.fixture(scope="module")
def layout(demo_dir):
    return TokenLayout(load_tokenizer(demo_dir / "tokenizer"), (1, 8, 4, 8), C, K, front_end=FbankLFR())


def frames(n, base=0):
    return (np.arange(C * n).reshape(C, n) + base) % K


def speech(seconds):
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


class Expect:
    """Builds the expected positions by hand: (input id, codes row or None, supervised)."""

    def __init__(self, layout):
        self.layout, self.ids, self.rows = layout, layout.ids, []

    def text(self, s, sup=False):
        self.ids_(self.layout.tokenizer(s, add_special_tokens=False)["input_ids"], sup)
        return self

    def ids_(self, ids, sup=False):
        self.rows += [(i, None, sup) for i in ids]
        return self

    def audio(self, delayed_positions, sup=True):
        self.rows += [(self.ids.frame, row, sup) for row in delayed_positions]
        return self

    def check(self, seq):
        assert len(seq) == len(self.rows), f"length {len(seq)} != expected {len(self.rows)}"
        for t, (tid, row, sup) in enumerate(self.rows):
            assert seq.input_ids[t] == tid, f"position {t}: id {seq.input_ids[t]} != {tid}"
            expected_codes = np.full(C, -1) if row is None else row
            np.testing.assert_array_equal(seq.codes[t], expected_codes, err_msg=f"position {t}")
            assert bool(seq.target_mask[t]) == sup, f"position {t}: supervised should be {sup}"


def test_tts_interleaves_1_8_then_4_8_with_delay_pads(layout):
    ids = layout.ids
    text = "sun moon day night hot cold"
    y = layout.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(y) == 6  # one token per word with the demo tokenizer
    codes = frames(5)
    a = delay(codes, PAD).T  # 5 frames + 7 delay pads = 12 positions
    agent = np.ones(16, np.float32)
    sample = Sample("k", "tts", [Turn("user", "Convert the text to speech.\n" + text), Turn("assistant", text, codes=codes)], CODEC, agent_speaker=agent)
    seq = layout.build(sample)
    e = Expect(layout)
    e.ids_([ids.im_start]).text("user\n").text("Convert the text to speech.\n" + text).ids_([ids.im_end]).text("\n")
    e.ids_([ids.im_start]).text("assistant\n").ids_([ids.speaker])
    # pattern 1 8 4 8: Y[0:1] Z[0:8], then the speech runs out in the second pair, which takes all
    # the rest, text first: Y[1:6] Z[8:12] (before the release's tail rule: Y[1:5] Z[8:12] Y[5:6])
    e.ids_(y[0:1], True).audio(a[0:8]).ids_(y[1:6], True).audio(a[8:12])
    e.ids_([ids.im_end], True).text("\n")
    e.check(seq)
    assert len(seq.speakers) == 1 and seq.speakers[0] is agent
    # the first delayed position holds only codebook 0, the rest are pads
    assert seq.codes[seq.codes[:, 0] >= 0][0].tolist() == [codes[0, 0]] + [PAD] * 7


def test_asr_places_one_audio_placeholder_per_encoder_frame(layout):
    ids = layout.ids
    wav = speech(1.0)
    sample = Sample("k", "asr", [Turn("user", "Convert the speech to text.", wav, SR), Turn("assistant", "hello world")], CODEC)
    seq = layout.build(sample)
    n = len(FbankLFR()(wav, SR))
    assert n == 17  # 1 s -> 98 fbank frames -> ceil(98 / 6) LFR frames (16.7 Hz)
    e = Expect(layout)
    e.ids_([ids.im_start]).text("user\n").ids_([ids.audio_start] + [ids.audio] * n + [ids.audio_end])
    e.text("Convert the speech to text.").ids_([ids.im_end]).text("\n")
    e.ids_([ids.im_start]).text("assistant\n").text("hello world", True).ids_([ids.im_end], True).text("\n")
    e.check(seq)
    assert len(seq.audio_features) == 1 and seq.audio_features[0].shape == (n, 560)
    assert seq.speakers == []


def test_sqa_and_text_have_text_only_answers(layout):
    ids = layout.ids
    spk = np.full(16, 0.5, np.float32)
    sqa = layout.build(Sample("k", "sqa", [Turn("user", "", speech(0.5), SR, speaker=spk), Turn("assistant", "star moon")], CODEC))
    n = len(FbankLFR()(speech(0.5), SR))
    e = Expect(layout)
    e.ids_([ids.im_start]).text("user\n").ids_([ids.user_speaker, ids.audio_start] + [ids.audio] * n + [ids.audio_end])
    e.ids_([ids.im_end]).text("\n").ids_([ids.im_start]).text("assistant\n").text("star moon", True).ids_([ids.im_end], True).text("\n")
    e.check(sqa)
    assert len(sqa.speakers) == 1

    text = layout.build(Sample("k", "text", [Turn("user", "sun rain"), Turn("assistant", "rain sun")], CODEC))
    e = Expect(layout)
    e.ids_([ids.im_start]).text("user\n").text("sun rain").ids_([ids.im_end]).text("\n")
    e.ids_([ids.im_start]).text("assistant\n").text("rain sun", True).ids_([ids.im_end], True).text("\n")
    e.check(text)
    assert not (text.codes >= 0).any()


def test_conversation_drops_history_speech_and_supervises_the_last_turn(layout):
    ids = layout.ids
    spk, agent = np.zeros(16, np.float32), np.ones(16, np.float32)
    w1, w2 = speech(0.4), speech(0.6)
    c1, c2 = frames(3, 1), frames(2, 5)
    turns = [
        Turn("user", "", w1, SR, speaker=spk),
        Turn("assistant", "sun", codes=c1),
        Turn("user", "", w2, SR, speaker=spk),
        Turn("assistant", "moon", codes=c2),
    ]
    seq = layout.build(Sample("k", "conversation", turns, CODEC, agent_speaker=agent))
    n1, n2 = len(FbankLFR()(w1, SR)), len(FbankLFR()(w2, SR))
    a2 = delay(c2, PAD).T  # 2 frames -> 9 positions
    e = Expect(layout)
    e.ids_([ids.im_start]).text("user\n").ids_([ids.user_speaker, ids.audio_start] + [ids.audio] * n1 + [ids.audio_end, ids.im_end]).text("\n")
    # history: text kept, speech dropped, not supervised
    e.ids_([ids.im_start]).text("assistant\n").ids_([ids.speaker]).text("sun").ids_([ids.im_end]).text("\n")
    e.ids_([ids.im_start]).text("user\n").ids_([ids.user_speaker, ids.audio_start] + [ids.audio] * n2 + [ids.audio_end, ids.im_end]).text("\n")
    e.ids_([ids.im_start]).text("assistant\n").ids_([ids.speaker])
    # one text token, then 8 audio positions, text is exhausted so the last position follows
    e.ids_(layout.tokenizer("moon", add_special_tokens=False)["input_ids"], True).audio(a2[0:8]).audio(a2[8:9])
    e.ids_([ids.im_end], True).text("\n")
    e.check(seq)
    # speakers in placeholder order: user, agent, user, agent
    assert [float(s[0]) for s in seq.speakers] == [0.0, 1.0, 0.0, 1.0]
    assert len(seq.audio_features) == 2


def test_supervise_all_trains_every_assistant_turn(demo_dir):
    layout = TokenLayout(load_tokenizer(demo_dir / "tokenizer"), (1, 8, 4, 8), C, K, supervise="all")
    turns = [Turn("user", "a"), Turn("assistant", "hello"), Turn("user", "b"), Turn("assistant", "world")]
    seq = layout.build(Sample("k", "text", turns, CODEC))
    supervised = layout.tokenizer.decode(seq.input_ids[seq.target_mask])
    assert supervised == "hello<|im_end|>world<|im_end|>"


def test_roleplay_and_singing(layout):
    ids = layout.ids
    agent = np.ones(16, np.float32)
    codes = frames(10)
    a = delay(codes, PAD).T  # 17 positions
    turns = [Turn("user", "Please sing this for me."), Turn("assistant", "sun moon", codes=codes)]
    seq = layout.build(Sample("k", "roleplay", turns, CODEC, system="You are Captain Mira.", agent_speaker=agent))
    star, moon = layout.tokenizer("sun moon", add_special_tokens=False)["input_ids"]
    e = Expect(layout)
    e.ids_([ids.im_start]).text("system\nYou are Captain Mira.").ids_([ids.im_end]).text("\n")
    e.ids_([ids.im_start]).text("user\n").text("Please sing this for me.").ids_([ids.im_end]).text("\n")
    e.ids_([ids.im_start]).text("assistant\n").ids_([ids.speaker])
    # the text runs out in the second block: leftover audio goes at the end, block after block
    e.ids_([star], True).audio(a[0:8]).ids_([moon], True).audio(a[8:16]).audio(a[16:17])
    e.ids_([ids.im_end], True).text("\n")
    e.check(seq)


def _runs(seq):
    """The supervised reply as run lengths: 'T1 A8 ...' (text / audio positions), <|im_end|> left out."""
    kinds = ["A" if c >= 0 else "T" for c in seq.codes[seq.target_mask][:-1, 0]]
    out = []
    for k in kinds:
        if out and out[-1][0] == k:
            out[-1][1] += 1
        else:
            out.append([k, 1])
    return " ".join(f"{k}{n}" for k, n in out)


@pytest.mark.parametrize(
    ("words", "num_frames", "expected"),
    [
        # text outlasts speech: the pair where the speech runs out takes all the remaining text,
        # then the last audio (was T1 A8 T4 A8 T4 A8 T4 A3 T17, text trailing alone)
        (30, 20, "T1 A8 T4 A8 T4 A8 T21 A3"),
        # speech outlasts text: the remaining audio follows the last text
        (3, 20, "T1 A8 T2 A19"),
        (5, 1, "T5 A8"),  # 1 frame = 8 positions: the first pair is the last and takes all 5 words
        (0, 2, "A9"),
    ],
)
def test_interleave_tail_follows_the_release(demo_dir, layout, words, num_frames, expected):
    pool = "sun moon day night hot".split()  # one token each with the demo tokenizer
    text = " ".join(pool[i % 5] for i in range(words))
    assert len(layout.tokenizer(text, add_special_tokens=False)["input_ids"]) == words
    seq = layout.build(Sample("k", "tts", [Turn("user", "x"), Turn("assistant", text, codes=frames(num_frames))], CODEC))
    assert _runs(seq) == expected


def test_prompt_only_stops_where_the_answer_starts(layout):
    ids = layout.ids
    sample = Sample("k", "tts", [Turn("user", "hi"), Turn("assistant", "hello", codes=frames(2))], CODEC, agent_speaker=np.ones(16, np.float32))
    seq = layout.build(sample, prompt_only=True)
    assert seq.input_ids[-1] == ids.speaker and not seq.target_mask.any() and not (seq.codes >= 0).any()


def test_other_patterns(demo_dir):
    layout = TokenLayout(load_tokenizer(demo_dir / "tokenizer"), (1, 4, 3, 8, 4, 10), C, K)  # VITA-Audio
    text = "sun moon day night hot cold up down big"  # one token per word with the demo tokenizer
    codes = frames(30)  # 37 positions
    seq = layout.build(Sample("k", "tts", [Turn("user", "x"), Turn("assistant", text, codes=codes)], CODEC))
    kinds = "".join("a" if c >= 0 else "t" for c in seq.codes[seq.target_mask][:, 0])
    assert kinds == "t" + "a" * 4 + "ttt" + "a" * 8 + "tttt" + "a" * 10 + "t" + "a" * 10 + "a" * 5 + "t"
    with pytest.raises(ValueError, match="pairs"):
        TokenLayout(layout.tokenizer, (1, 8, 4), C, K)


def test_codec_mismatch_names_the_field(layout):
    other = CodecInfo("mimi", 8, 2048, 12.5, 24000)
    sample = Sample("key7", "tts", [Turn("user", "x"), Turn("assistant", "y", codes=frames(2))], other, shard="s.tar")
    with pytest.raises(SampleError, match=r"s\.tar: sample 'key7', field 'codec'.*8 x 2048.*8 x 64"):
        layout.build(sample)


def test_truncate_never_cuts_a_user_speech_span(layout):
    wav = speech(1.0)
    seq = layout.build(Sample("k", "asr", [Turn("user", "", wav, SR, speaker=np.ones(16, np.float32)), Turn("assistant", "hello")], CODEC))
    start = int(np.flatnonzero(seq.input_ids == layout.ids.audio_start)[0])
    cut = layout.truncate(seq, start + 5)
    assert len(cut) == start and cut.audio_features == [] and len(cut.speakers) == 1
    assert layout.truncate(seq, len(seq)) is seq
