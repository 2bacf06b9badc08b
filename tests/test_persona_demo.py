"""The demo character talks: docs/stages.md's commands, run after the README's demo, give Captain Mira.

SLOW: starts from the README's trained tiny SFT demo (``conftest.readme_demo``, run once per session
and shared with test_demo.py), then the persona LoRA recipe (about a minute on 2 idle cores). Checks
what docs/stages.md promises, on questions the persona never trained on (spoken and typed): at least
90% of the replies follow her rule (the opposite, then "calm"), every reply has speech frames, and
the frames are the demo's rule codes in HER voice (voice 3), not the SFT demo's voices 0-2.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
import soundfile

from qinyu_lit.prep.demo import PERSONAS, SAMPLE_RATE, DemoRuleCodec, demo_codes, demo_speech, persona_answer
from qinyu_lit.prep.persona_data import held_out_persona_questions

from .conftest import ROOT, qinyu_lit_in


def documented_persona_steps() -> list[list[str]]:
    """The ``qinyu-lit`` commands of docs/stages.md's "The demo character, end to end" block."""
    doc = (ROOT / "docs" / "stages.md").read_text().split("### The demo character, end to end", 1)[1]
    block = doc.split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line)[1:] for line in block.strip().splitlines()]


@pytest.fixture(scope="module")
def persona_run(readme_demo):
    work, sft, _ = readme_demo
    steps = documented_persona_steps()
    assert [s[0] for s in steps] == ["demo-persona", "persona-data", "fit", "export", "persona-reply"], steps
    logs = [qinyu_lit_in(work, *step) for step in steps]
    return work, sft, logs


def test_persona_reply_answers_a_spoken_question_in_character_with_a_wav(persona_run):
    work, _, logs = persona_run
    assert "[Captain Mira] " in logs[-1] and " calm\n" in logs[-1], logs[-1]  # her catchphrase ends the reply
    codes = np.load(work / "captain_reply.npy")
    wav, rate = soundfile.read(work / "captain_reply.wav")
    assert rate == DemoRuleCodec.sample_rate and codes.shape[1] > 0 and len(wav) == codes.shape[1] * rate // 12.5


def held_out_replies(work: Path, sft: Path) -> list[tuple[str, bool, str, object]]:
    """(word, spoken?, expected, reply) for the 16 held-out questions, asked through ``PersonaBank``."""
    from qinyu_lit.inference import load_model
    from qinyu_lit.persona_bank import PersonaBank

    bank = PersonaBank(load_model(str(sft)))
    bank.add("captain", work / "adapters" / "captain")
    out = []
    for word, spoken, user_voice in held_out_persona_questions():
        ask = {"audio": (demo_speech(word, user_voice), SAMPLE_RATE)} if spoken else {"text": word}
        out.append((word, spoken, persona_answer(word, "captain"), bank.reply(persona="captain", max_new_positions=120, **ask)))
    return out


@pytest.fixture(scope="module")
def replies(persona_run):
    work, sft, _ = persona_run
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # the checkpoint names its tokenizer relative to where fit ran
        return held_out_replies(work, sft)


def test_held_out_replies_all_speak_in_her_voice_and_end_with_her_catchphrase(replies):
    voice = PERSONAS["captain"][0]
    hers, sft_voices = [], []
    for word, _, expected, reply in replies:
        assert reply.num_frames > 0 and reply.text.strip().endswith(" calm"), (word, reply.text)
        codes, n = reply.codes.numpy(), min(reply.num_frames, demo_codes(expected, voice).shape[1])
        hers.append((codes[:, :n] == demo_codes(expected, voice)[:, :n]).mean())
        sft_voices.append(max((codes[:, :n] == demo_codes(expected, v)[:, :n]).mean() for v in (0, 1, 2)))
    # measured: 0.6-0.8 of the codes are her rule codes, 0.00 an SFT demo voice's (voices differ by 13 x voice mod 64)
    assert np.mean(hers) >= 0.3 and np.mean(sft_voices) <= 0.05, (hers, sft_voices)


def test_held_out_questions_follow_her_rule(replies):
    # issue 23 asks 90%; measured 14-16 of 16 (docs/stages.md); 8/16 before the recipe trained the speaker projection
    right = [reply.text.strip() == expected for _, _, expected, reply in replies]
    assert sum(right) / len(right) >= 0.9, [(w, r.text) for w, _, _, r in replies]


def test_a_reply_without_speech_writes_no_wav_and_fails(persona_run, capsys):
    """Asked for speech (--codec) with no room for a frame: one line why, exit 2, no WAV."""
    from qinyu_lit.cli import main

    work, sft, _ = persona_run
    out = work / "cut_reply"
    with pytest.raises(SystemExit) as exit_info:
        main(["persona-reply", str(sft), str(work / "adapters" / "captain"), "black", "--codec", "demo",
              "--max_new_positions", "1", "--out", str(out)])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr()
    assert "UNFINISHED" in err.out
    line = err.err.strip().splitlines()[-1]
    assert line.startswith("qinyu-lit: error: the reply ended after 1 positions without speech: raise --max_new_positions")
    assert not Path(f"{out}.wav").exists() and not Path(f"{out}.npy").exists() and Path(f"{out}.txt").is_file()
