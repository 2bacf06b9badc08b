"""The ``official`` profile reproduces the released VITA-QinYu's samples, written out by hand here
from the release's rules (its worked example: 6 text tokens, 10 speech frames, 3 LFR frames)."""

import numpy as np
import pytest

from qinyu_lit.data.features import FbankLFR, SenseVoiceFbank, load_cmvn
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.schema import CodecInfo, Sample, SampleError, Turn
from qinyu_lit.data.tokenizer import load_tokenizer, official_demo_tokenizer, special_ids

C, K = 8, 1024
CODEC = CodecInfo("xy_tokenizer", C, K, 12.5, 16000)
SR = 16000
REPLY = "Hello! How are you today"  # 6 tokens with the demo tokenizer

# The release's per-codebook values for T = 10 frames (17 delayed positions), copied from its
# layout description: ``cI[n]`` = code n of codebook I, ``Pp`` = pad p (value 1024 + p).
TABLE = """
c0[0] P0 P0 P0 P0 P0 P0 P0
c0[1] c1[0] P1 P1 P1 P1 P1 P1
c0[2] c1[1] c2[0] P2 P2 P2 P2 P2
c0[3] c1[2] c2[1] c3[0] P3 P3 P3 P3
c0[4] c1[3] c2[2] c3[1] c4[0] P4 P4 P4
c0[5] c1[4] c2[3] c3[2] c4[1] c5[0] P5 P5
c0[6] c1[5] c2[4] c3[3] c4[2] c5[1] c6[0] P6
c0[7] c1[6] c2[5] c3[4] c4[3] c5[2] c6[1] c7[0]
c0[8] c1[7] c2[6] c3[5] c4[4] c5[3] c6[2] c7[1]
c0[9] c1[8] c2[7] c3[6] c4[5] c5[4] c6[3] c7[2]
P0 c1[9] c2[8] c3[7] c4[6] c5[5] c6[4] c7[3]
P1 P1 c2[9] c3[8] c4[7] c5[6] c6[5] c7[4]
P2 P2 P2 c3[9] c4[8] c5[7] c6[6] c7[5]
P3 P3 P3 P3 c4[9] c5[8] c6[7] c7[6]
P4 P4 P4 P4 P4 c5[9] c6[8] c7[7]
P5 P5 P5 P5 P5 P5 c6[9] c7[8]
P6 P6 P6 P6 P6 P6 P6 c7[9]
"""


def table_values(codes):
    rows = []
    for line in TABLE.split("\n")[1:-1]:
        row = []
        for cell in line.split():
            if cell[0] == "P":
                row.append(K + int(cell[1:]))
            else:
                i, n = cell[1:].rstrip("]").split("[")
                row.append(int(codes[int(i), int(n)]))
        rows.append(row)
    return np.array(rows)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return load_tokenizer(official_demo_tokenizer(tmp_path_factory.mktemp("official_tok"), K), "official")


@pytest.fixture(scope="module")
def am_mvn(tmp_path_factory):
    rng = np.random.default_rng(0)
    shift, scale = -rng.uniform(5, 15, 560), rng.uniform(0.1, 0.3, 560)
    path = tmp_path_factory.mktemp("sensevoice") / "am.mvn"
    fmt = lambda v: " ".join(f"{x:.6f}" for x in v)  # noqa: E731
    path.write_text(
        "<Nnet>\n<Splice> 560 560\n[ 0 ]\n"
        f"<AddShift> 560 560\n<LearnRateCoef> 0 [ {fmt(shift)} ]\n"
        f"<Rescale> 560 560\n<LearnRateCoef> 0 [ {fmt(scale)} ]\n</Nnet>\n"
    )
    return path


@pytest.fixture(scope="module")
def layout(tok, am_mvn):
    return TokenLayout(tok, (1, 8, 4, 8), C, K, front_end=SenseVoiceFbank(str(am_mvn)), profile="official")


def speech(samples):
    t = np.arange(samples) / SR
    return (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)


def test_the_worked_example_token_for_token(layout, tok):
    ids = special_ids(tok, "official")
    t = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    codes = (np.arange(C)[:, None] * 37 + np.arange(10)[None] * 5 + 1) % K
    agent, user = np.full(192, 0.25, np.float32), np.full(192, -0.5, np.float32)
    wav = speech(2800)  # 1 + (2800 - 400) // 160 = 16 fbank frames -> ceil(16 / 6) = 3 LFR frames
    sample = Sample(
        "ex",
        "conversation",
        [Turn("user", "", wav, SR, speaker=user), Turn("assistant", REPLY, codes=codes)],
        CODEC,
        agent_speaker=agent,
    )
    seq = layout.build(sample)

    y, S = t(REPLY), t("Your Voice Embedding: ")
    assert len(y) == 6 and len(S) == 5 and t("system") + t("user") + t("assistant") + t("\n") == [
        tok.convert_tokens_to_ids(w) for w in ("system", "user", "assistant", "Ċ")
    ]
    nl = t("\n")
    v = table_values(codes)  # [17, 8] local values
    A = [ids.audio_base + int(v[k, 0]) for k in range(17)]  # codebook 0's ids in input_ids
    expected = (
        [ids.im_start] + t("system") + nl + S + [ids.speaker, ids.im_end] + nl  # 0..10
        + [ids.im_start] + t("user") + nl  # 11..13
        + [ids.user_speaker, ids.audio_start] + [ids.audio] * 7 + [ids.audio_end, ids.im_end] + nl  # 14..25
        + [ids.im_start] + t("assistant") + nl  # 26..28
        + y[0:1] + A[0:8] + y[1:5] + A[8:16] + y[5:6] + [ids.end_of_conv] + A[16:17]  # 29..52
        + [ids.im_end] + nl  # 53, 54
    )  # fmt: skip
    assert seq.input_ids.tolist() == expected
    assert len(seq) == 55
    names = tok.convert_ids_to_tokens([int(i) for i in seq.input_ids])
    assert names[8] == "<|speaker|>" and names[14] == "<|user_speaker|>" and names[15] == "<|begin_of_audio|>"
    assert names[16:23] == ["<|context_of_audio|>"] * 7 and names[23] == "<|end_of_audio|>"
    assert names[51] == "<|end_of_conv|>" and names[52] == "<|audio_0_6_pad|>" and names[53:] == ["<|im_end|>", "Ċ"]
    assert "<|begin_of_audio|>" not in names[26:]  # no begin/end of audio around the reply's speech

    # labels: the reply, its <|im_end|> and the \n after it; nothing before
    assert np.flatnonzero(seq.target_mask).tolist() == list(range(29, 55))
    # audio spans (exclusive ends) and their 8 codebook values, pads included
    audio_pos = np.flatnonzero(seq.codes[:, 0] >= 0)
    assert audio_pos.tolist() == list(range(30, 38)) + list(range(42, 50)) + [52]
    np.testing.assert_array_equal(seq.codes[audio_pos], v)
    assert (seq.codes[np.setdiff1d(np.arange(55), audio_pos)] == -1).all()
    # speakers in placeholder order: the agent's (system, position 8), then the user's (14)
    assert len(seq.speakers) == 2 and seq.speakers[0] is agent and seq.speakers[1] is user
    assert len(seq.audio_features) == 1 and seq.audio_features[0].shape == (3, 560)


def test_sense_voice_front_end_applies_cmvn_and_counts_4_query_frames(am_mvn):
    shift, scale = load_cmvn(am_mvn)
    assert shift.shape == scale.shape == (560,) and (shift < 0).all()
    wav = speech(16000)
    plain, sv = FbankLFR()(wav, SR), SenseVoiceFbank(str(am_mvn))
    np.testing.assert_allclose(sv(wav, SR), (plain + shift) * scale, rtol=1e-5, atol=1e-5)
    assert len(plain) == 17 and sv.num_outputs(plain) == 21  # ceil(98 / 6) + 4


def test_bad_cmvn_names_the_file(tmp_path):
    bad = tmp_path / "am.mvn"
    bad.write_text("<Nnet>\n</Nnet>\n")
    with pytest.raises(ValueError, match=r"am\.mvn: no <AddShift>"):
        SenseVoiceFbank(str(bad))


def test_text_only_samples_supervise_every_turn_with_the_newline(layout, tok):
    turns = [Turn("user", "Tell me"), Turn("assistant", "Hello"), Turn("user", "a short story"), Turn("assistant", "I am fine")]
    seq = layout.build(Sample("k", "text", turns, CODEC))
    assert tok.decode(seq.input_ids[seq.target_mask]) == "Hello<|im_end|>\nI am fine<|im_end|>\n"
    assert seq.input_ids[0] == layout.ids.im_start and layout.ids.speaker not in seq.input_ids  # no system, no voice
    assert layout.ids.end_of_conv not in seq.input_ids  # end of conv only closes text that has speech


def test_speech_samples_supervise_only_the_last_turn_and_drop_history_speech(layout, tok):
    agent, spk = np.ones(192, np.float32), np.zeros(192, np.float32)
    turns = [
        Turn("user", "Convert the speech to text.\n<|audio|> thank you", speech(3000), SR, speaker=spk),
        Turn("assistant", "Hello", codes=np.zeros((C, 3), np.int64)),
        Turn("user", "Tell me"),
        Turn("assistant", "", codes=np.full((C, 2), 5, np.int64)),  # speech only
    ]
    seq = layout.build(Sample("k", "conversation", turns, CODEC, system="You are Mira.", agent_speaker=agent))
    names = tok.convert_ids_to_tokens([int(i) for i in seq.input_ids])
    text = "".join(names).replace("Ġ", " ").replace("Ċ", "\n")
    assert text.startswith("<|im_start|>system\nYou are Mira.\nYour Voice Embedding: <|speaker|><|im_end|>\n")
    # the user speech stands where its tag was, after the text before it
    assert "<|im_start|>user\nConvert the speech to text.\n<|user_speaker|><|begin_of_audio|><|context_of_audio|>" in text
    assert "<|end_of_audio|> thank you<|im_end|>" in text
    # history: text only, unsupervised; the speech-only reply keeps begin/end of audio
    assert "<|im_start|>assistant\nHello<|im_end|>\n" in text and names.count("<|audio_0_0|>") == 0
    sup = [names[i] for i in np.flatnonzero(seq.target_mask)]
    assert sup == ["<|begin_of_audio|>"] + ["<|audio_0_5|>"] * 2 + [f"<|audio_0_{p}_pad|>" for p in range(7)] + [
        "<|end_of_audio|>",
        "<|im_end|>",
        "Ċ",
    ]


def test_user_speech_without_a_speaker_names_the_field(layout):
    sample = Sample("k7", "asr", [Turn("user", "", speech(3000), SR), Turn("assistant", "Hello")], CODEC, shard="s.tar")
    with pytest.raises(SampleError, match=r"s\.tar: sample 'k7', field 'turns\[0\]\.speaker'.*user_speaker"):
        layout.build(sample)


def test_prompt_only_ends_at_the_assistant_header(layout, tok):
    sample = Sample("k", "tts", [Turn("user", "Hello"), Turn("assistant", "Hello", codes=np.zeros((C, 2), np.int64))], CODEC, agent_speaker=np.ones(192, np.float32))
    seq = layout.build(sample, prompt_only=True)
    assert tok.convert_ids_to_tokens([int(i) for i in seq.input_ids[-3:]]) == ["<|im_start|>", "assistant", "Ċ"]
    assert not seq.target_mask.any() and len(seq.speakers) == 1


def test_tokenizer_profiles(tok, demo_dir):
    ids = special_ids(tok, "official")
    for i, v, name in [(0, 0, "<|audio_0_0|>"), (1, 0, "<|audio_1_0|>"), (3, 1024 + 2, "<|audio_3_2_pad|>"), (7, 1031, "<|audio_7_7_pad|>")]:
        assert tok.convert_tokens_to_ids(name) == ids.audio_base + (K + C) * i + v
    order = tok.convert_ids_to_tokens(list(range(ids.audio_base - 5, ids.audio_base)))
    assert order == ["<|begin_of_audio|>", "<|end_of_audio|>", "<|context_of_audio|>", "<|audio|>", "<|end_of_conv|>"]
    assert tok.convert_ids_to_tokens([ids.speaker, ids.user_speaker]) == ["<|speaker|>", "<|user_speaker|>"]
    assert ids.user_speaker == len(tok) - 1
    with pytest.raises(ValueError, match="lacks the official VITA-QinYu tokens"):
        load_tokenizer(demo_dir / "tokenizer", "official")
    with pytest.raises(ValueError, match="codebook_size"):
        TokenLayout(tok, (1, 8, 4, 8), C, 64, profile="official")  # K = 64 would shift every audio id


def test_data_module_selects_the_official_layout(demo_dir, tmp_path):
    from qinyu_lit.data.datamodule import QinYuDataModule

    tok_dir = official_demo_tokenizer(tmp_path / "tok", 64)  # the demo shards' 8 x 64 codes
    dm = QinYuDataModule(
        train=str(demo_dir / "val"), tokenizer=str(tok_dir), codebook_size=64, token_layout="official",
        audio_front_end="sense_voice", batch_size=64, shuffle_buffer=0,
    )  # fmt: skip
    assert dm.layout.profile == "official" and dm.layout.delay_pads == "positional"
    with pytest.warns(UserWarning, match=r"turns\[0\]\.speaker"):  # demo ASR has no user voice: skipped, named
        batch = next(iter(dm.train_dataloader()))
    ids, codes = batch["input_ids"], batch["codes"]
    ids_ = special_ids(dm.tokenizer, "official")
    assert (ids == ids_.end_of_conv).any() and (ids == ids_.user_speaker).any()
    is_audio = codes[..., 0] >= 0
    assert (ids[is_audio] == ids_.audio_base + codes[..., 0][is_audio]).all()  # codebook 0's id at audio positions
    assert (codes == 64 + 6).any() and codes.max() < 64 + 8  # positional pads, up to pad 6
    with pytest.raises(ValueError, match="token layout profile must be one of"):  # the CLI checks the Literal first
        _ = QinYuDataModule(token_layout="vita", tokenizer=str(tok_dir)).layout


def test_the_voice_line_and_agent_vector_only_with_assistant_speech(layout, tok):
    ids = special_ids(tok, "official")
    agent = np.full(192, 0.25, np.float32)
    text_only = Sample("t", "text", [Turn("user", "Hi"), Turn("assistant", REPLY)], CODEC, agent_speaker=agent)
    seq = layout.build(text_only)
    assert ids.speaker not in seq.input_ids.tolist() and seq.speakers == []
    assert "Voice" not in tok.decode(seq.input_ids)  # the release adds the line only for a speech reply
    codes = np.zeros((C, 4), np.int64)
    spoken = Sample("s", "tts", [Turn("user", "Hi"), Turn("assistant", REPLY, codes=codes)], CODEC, agent_speaker=agent)
    seq = layout.build(spoken)
    assert seq.input_ids.tolist().count(ids.speaker) == 1 and len(seq.speakers) == 1


def test_split_batch_tells_a_speech_only_reply_from_user_speech(layout, tok):
    """A speech-only reply is wrapped in <|begin_of_audio|> ... <|end_of_audio|> too; only the spans
    that hold placeholders are user speech (layout.user_speech_starts, one rule)."""
    from qinyu_lit.data.batch import collate
    from qinyu_lit.eval.metrics import split_batch

    ids = special_ids(tok, "official")
    codes = (np.arange(C)[:, None] + np.arange(5)[None]) % K
    user = np.full(192, -0.5, np.float32)
    speech_only = Sample("reply", "tts", [Turn("user", "Say it."), Turn("assistant", "", codes=codes)], CODEC)
    heard = Sample("heard", "sqa", [Turn("user", "", speech(2800), SR, speaker=user), Turn("assistant", REPLY)], CODEC)
    seqs = [layout.build(speech_only), layout.build(heard)]
    assert seqs[0].input_ids.tolist().count(ids.audio_start) == 1 and seqs[0].audio_features == []
    batch = collate([seqs], layout.ids.pad, C, pad_to=sum(len(s) for s in seqs))
    got = split_batch(batch, ids)
    assert [len(s.audio_features) for s in got] == [0, 1]
    np.testing.assert_array_equal(got[1].audio_features[0], seqs[1].audio_features[0])


def test_the_release_tokenizer_loads_without_running_its_custom_code(tmp_path, monkeypatch):
    """The release's config.json has ``auto_map`` (its own model code): loading the tokenizer must not
    ask "Do you wish to run the custom code? [y/N]" (convert-official stalled on it) nor run it."""
    import builtins
    import json

    folder = official_demo_tokenizer(tmp_path / "release", K)
    config = {"model_type": "qwen3_sensevoice_xy", "auto_map": {"AutoConfig": "configuration_qwen3.Config"}}
    (folder / "config.json").write_text(json.dumps(config))
    tc = json.loads((folder / "tokenizer_config.json").read_text())
    tc.pop("tokenizer_class", None)  # then AutoTokenizer reads config.json to find the class
    (folder / "tokenizer_config.json").write_text(json.dumps(tc))

    asked = []  # transformers swallows an exception raised here, so record the question instead
    monkeypatch.setattr(builtins, "input", lambda *args: asked.append(args) or "n")
    tok = load_tokenizer(str(folder), "official")
    assert asked == [] and tok.convert_tokens_to_ids("<|speaker|>") == special_ids(tok, "official").speaker


def test_dither_is_a_training_option_of_the_fbank_front_ends(am_mvn, tmp_path):
    """FunASR dithers (1.0) at training time; ``data.dither`` does it for the training stream only."""
    from qinyu_lit.data.datamodule import QinYuDataModule

    wav = speech(8000)
    plain = SenseVoiceFbank(str(am_mvn))
    np.testing.assert_array_equal(plain(wav, SR), plain(wav, SR))  # default: deterministic
    dithered = SenseVoiceFbank(str(am_mvn), dither=1.0)
    a, b = dithered(wav, SR), dithered(wav, SR)
    assert a.shape == plain(wav, SR).shape and not np.array_equal(a, b)  # fresh noise at every read
    assert np.abs(a - plain(wav, SR)).mean() < 0.05 * np.abs(plain(wav, SR)).mean()  # noise, not a new signal
    tok = official_demo_tokenizer(tmp_path / "tok", K)
    dm = QinYuDataModule(tokenizer=str(tok), codebook_size=K, audio_front_end="sense_voice", cmvn=str(am_mvn),
                         token_layout="official", dither=1.0)  # fmt: skip
    assert dm.train_layout.front_end.dither == 1.0 and dm.layout.front_end.dither == 0.0
    assert dm.train_layout.tokenizer is dm.layout.tokenizer
    with pytest.raises(ValueError, match="data.dither applies to the fbank front ends"):
        QinYuDataModule(tokenizer=str(tok), audio_front_end="whisper", dither=1.0)
