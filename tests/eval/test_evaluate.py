"""``qinyu-lit evaluate`` end to end on tiny checkpoints and the demo evaluation set.

Untrained tiny checkpoints test the plumbing (every task runs, two checkpoints give two columns
and a difference, resume, bad input). What a trained demo model must score is checked by
``test_trained_demo_speaks_intelligibly_and_worse_without_its_voice``, which trains the README's
tiny SFT recipe (minutes): it runs with ``QINYU_SLOW=1`` only.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from qinyu_lit.cli import main
from qinyu_lit.eval.eval_sets import read_eval_set
from qinyu_lit.eval.report import figures
from qinyu_lit.eval.tasks import run_set
from qinyu_lit.evaluate import _components
from qinyu_lit.inference import load_codec, load_model
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.tiny import tiny_config
from qinyu_lit.prep.demo_eval import DemoASR, DemoVoiceEncoder, write_demo_eval_set

ROOT = Path(__file__).resolve().parents[2]
PER_TASK = 3  # rows per task in the demo evaluation set: asr, sqa, tts


@pytest.fixture(scope="module")
def untrained(demo_dir, tmp_path_factory):
    """Two exported tiny random checkpoints (different seeds) and a demo evaluation set."""
    root = tmp_path_factory.mktemp("evaluate")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        QinYuModel(tiny_config(demo_dir / "tokenizer")).save_pretrained(str(root / f"seed{seed}"))
        paths.append(str(root / f"seed{seed}"))
    return root, paths, write_demo_eval_set(root / "set", per_task=PER_TASK)


def _evaluate(*args: str) -> None:
    main(["evaluate", *args, "--max_new_positions", "16"])


@pytest.mark.usefixtures("one_thread")
def test_two_checkpoints_give_every_table_side_by_side(untrained, capsys):
    root, (a, b), manifest = untrained
    out = root / "out"
    _evaluate(a, b, "--set", f"demo={manifest}", "--out_dir", str(out), "--name", "pair")
    report = (out / "pair" / "report.md").read_text()
    assert report in capsys.readouterr().out
    assert "| set | metric | seed0 | seed1 | Δ (last - first) |" in report
    for title in ("ASR (paper Table 6)", "TTS (paper Table 7", "Speaker similarity", "Pitch fidelity",
                  "Ablation (paper Table 11)", "Speech QA", "Speed"):  # fmt: skip
        assert f"### {title}" in report
    figs = json.loads((out / "pair" / "figures.json").read_text())["figures"]
    for label in ("seed0", "seed1"):
        demo = figs[label]["demo"]
        assert {"asr.wer", "qa.exact", "tts.wer", "tts.ss", "tts.pitch_dtw", "tts.rtf", "ablation.wer"} <= set(demo)
        rows = [json.loads(line) for line in (out / "pair" / label / "demo.jsonl").read_text().splitlines()]
        assert sorted(r["pass"] for r in rows) == sorted(["asr", "qa", "tts", "ablation"] * PER_TASK)
        asr = next(r for r in rows if r["pass"] == "asr")
        assert {"reference", "hypothesis", "errors", "units"} <= set(asr)
        assert len(list((out / "pair" / label / "demo" / "tts").glob("*.wav"))) == PER_TASK  # the spoken replies
        events = EventAccumulator(str(out / "pair" / "tb" / label))
        events.Reload()
        assert "eval/demo/tts.wer" in events.Tags()["scalars"]
        assert "eval/demo/ablation/tts0" in events.Tags()["audio"]


@pytest.mark.usefixtures("one_thread")
def test_an_interrupted_evaluation_resumes_from_its_rows(untrained, capsys):
    root, (a, _), manifest = untrained
    out = root / "resume"
    _evaluate(a, "--set", f"demo={manifest}", "--out_dir", str(out), "--tasks", "asr", "qa")
    jsonl = out / "default" / "seed0" / "demo.jsonl"
    first = jsonl.read_text().splitlines()
    jsonl.write_text("\n".join(first[:2]) + '\n{"pass": "asr", "ke')  # killed while writing the third row
    _evaluate(a, "--set", f"demo={manifest}", "--out_dir", str(out), "--tasks", "asr", "qa")
    lines = jsonl.read_text().splitlines()
    assert lines[:2] == first[:2]  # the finished rows are kept as written; the torn one is dropped
    again = [json.loads(line) for line in lines[2:]]
    assert len(again) == len(first) - 2  # only the missing samples were generated again
    assert {(r["pass"], r["key"]) for r in again} == {(json.loads(x)["pass"], json.loads(x)["key"]) for x in first[2:]}


def _bad_set(root: Path, manifest: Path) -> Path:
    """The demo set's asr/sqa rows plus a missing wav, an empty reference and an 8 kHz wav; no tts rows."""
    bad = root / "bad"
    shutil.copytree(manifest.parent, bad)
    rows = [json.loads(x) for x in (bad / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["task"] != "tts"]
    sf.write(bad / "wav" / "narrow.wav", np.zeros(800, np.float32), 8000)
    user = {"role": "user", "text": "Convert the speech to text."}
    rows += [
        {"key": "gone", "task": "asr", "turns": [user | {"audio": "wav/gone.wav"}, {"role": "assistant", "text": "hot"}]},
        {"key": "blank", "task": "asr", "turns": [user | {"audio": "wav/asr0.wav"}, {"role": "assistant", "text": " "}]},
        {"key": "narrow", "task": "asr", "turns": [user | {"audio": "wav/narrow.wav"}, {"role": "assistant", "text": "hot"}]},
    ]  # fmt: skip
    (bad / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return bad / "manifest.jsonl"


@pytest.mark.usefixtures("one_thread")
def test_bad_input_is_named_in_one_line_and_counted_and_the_rest_runs(untrained, capsys):
    root, (a, _), manifest = untrained
    bad = _bad_set(root, manifest)
    out = root / "badout"
    _evaluate(a, "--set", f"bad={bad}", "--out_dir", str(out), "--tasks", "asr", "tts")
    printed = capsys.readouterr().out
    assert f"{bad}:{2 * PER_TASK + 1}: sample 'gone': user audio" in printed and "gone.wav: no such file" in printed
    assert f"{bad}:{2 * PER_TASK + 2}: sample 'blank': turns[-1].text: empty reference" in printed
    assert "sample 'narrow': user audio" in printed and "sample rate 8000 Hz, below the 16000 Hz" in printed
    assert "seed0/bad: no rows for the tts pass (tasks tts, singing): skipped" in printed
    report = (out / "default" / "report.md").read_text()
    assert "### Manifest rows skipped while reading (3)" in report
    assert json.loads((out / "default" / "figures.json").read_text())["figures"]["seed0"]["bad"]["asr.samples"] == PER_TASK


def test_a_checkpoint_without_audio_heads_skips_the_speech_passes_and_counts_them(untrained, tmp_path, capsys):
    root, (a, _), manifest = untrained
    model = load_model(a)
    parts = replace(_components(model, load_codec("demo"), DemoASR(), DemoVoiceEncoder(16), 8), has_audio=False)
    rows, _ = read_eval_set(str(manifest))
    done = run_set(parts, rows, ["tts", "ablation"], tmp_path / "rows.jsonl", "textonly/demo")
    assert "textonly/demo: sample 'tts0' (tts): skipped: the checkpoint has no audio heads" in capsys.readouterr().out
    figs = figures(done)
    assert figs["tts.skipped"] == figs["ablation.skipped"] == PER_TASK and figs["tts.samples"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "no evaluation set: give --set NAME=MANIFEST (or --demo_set DIR for the demo's)"),
        (["--set", "librispeech"], "--set 'librispeech': give NAME=MANIFEST"),
        (["--set", "x=nowhere.jsonl"], "no such manifest: nowhere.jsonl"),
        (["--tasks", "asr", "wer"], "--tasks: unknown ['wer']; choose from"),
        (["--codec", "tiny-mimi"], "--asr demo reads the demo codec's tones; with --codec tiny-mimi give a real ASR"),
    ],
)
def test_user_errors_are_one_line(untrained, capsys, args, message):
    _, (a, _), _ = untrained
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", a, *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


# ---------------------------------------------------------------------------- the trained demo (slow)


def test_trained_demo_speaks_intelligibly_and_worse_without_its_voice(readme_demo, tmp_path):
    """After the README's training (the session's shared ``readme_demo`` run): TTS through the demo ASR is
    intelligible, and zeroing the speaker vector makes it measurably worse (the demo's codes depend on the voice)."""
    _, trained_demo_ckpt, _ = readme_demo
    out = tmp_path / "out"
    main(["evaluate", str(trained_demo_ckpt), "--demo_set", str(tmp_path / "set"), "--out_dir", str(out)])
    demo = json.loads((out / "default" / "figures.json").read_text())["figures"]["tiny_sft_last"]["demo"]
    assert demo["tts.wer"] < 0.3
    worse_wer = demo["ablation.wer"] > demo["tts.wer"] + 0.05
    worse_ss = demo.get("ablation.ss", 1.0) < demo["tts.ss"] - 0.05
    assert worse_wer or worse_ss, demo
