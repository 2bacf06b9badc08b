"""`qinyu-lit` as a newcomer meets it: every command listed, typos answered with a suggestion, user
errors as one line with exit status 2 (the traceback only with --debug), paths that work from any directory."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from qinyu_lit.cli import COMMANDS, main
from qinyu_lit.data.errors import QinYuError

ROOT = Path(__file__).resolve().parents[1]
TINY_SFT = str(ROOT / "recipes" / "tiny" / "sft.yaml")


def _error(capsys, *args: str) -> str:
    """Run ``qinyu-lit ARGS``; it must fail with exit status 2 and one stderr line, returned."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("qinyu-lit: error: ")
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def _fit_args(train: str, tokenizer: str, *extra: str) -> list[str]:
    root = str(Path(train).parent / "fit_root")  # LightningCLI writes config.yaml there, not into the cwd
    return ["fit", "--config", TINY_SFT, "--data.init_args.train", train, "--data.init_args.val", "null",
            "--data.init_args.tokenizer", tokenizer, "--data.init_args.num_workers", "0",
            "--trainer.logger", "false", "--trainer.default_root_dir", root, *extra]  # fmt: skip


def test_help_lists_every_command_with_one_line(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert listed == list(COMMANDS)
    assert {"fit", "validate", "test", "predict", "demo-data", "data", "generate", "export", "demo-persona",
            "persona-data", "persona-reply"} <= set(listed)  # fmt: skip
    assert all(len(line.split(None, 1)) == 2 for line in out.splitlines() if line.startswith("  "))


def test_unknown_command_suggests_the_nearest(capsys):
    line = _error(capsys, "persona", "--help")
    assert line.startswith("qinyu-lit: error: unknown command 'persona'; did you mean persona-data")
    assert "choose from" not in line


def test_demo_data_takes_its_folder_as_a_positional_too(tmp_path, capsys):
    main(["demo-data", str(tmp_path / "d"), "--samples_per_task", "1", "--val_samples_per_task", "1"])
    assert f"demo corpus written to {tmp_path / 'd'}" in capsys.readouterr().out
    assert (tmp_path / "d" / "tokenizer").is_dir() and list((tmp_path / "d" / "train").glob("*.tar"))


def test_missing_or_empty_data_is_one_line_with_the_demo_hint(tmp_path, demo_dir, capsys):
    tok = str(demo_dir / "tokenizer")
    line = _error(capsys, *_fit_args(str(tmp_path / "nowhere"), tok))
    assert f"missing: {tmp_path / 'nowhere'}" in line and "`qinyu-lit demo-data data/demo`" in line
    (tmp_path / "empty").mkdir()
    line = _error(capsys, *_fit_args(str(tmp_path / "empty"), tok))
    assert f"no shards found for '{tmp_path / 'empty'}'" in line and "`qinyu-lit demo-data" in line


def test_a_failed_data_build_is_one_line_and_leaves_nothing_to_block_a_retry(tmp_path, demo_dir, capsys, monkeypatch):
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"task": "text", "turns": [{"role": "user", "text": "hi"},
                                                              {"role": "assistant", "text": "yo"}]}) + "\n")  # fmt: skip
    build = ["data", "build", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--progress", "false"]
    line = _error(capsys, *build, "--codec", str(tmp_path / "no-codec"), "--tokenizer", str(demo_dir / "tokenizer"))
    assert "no-codec" in line and not (tmp_path / "out").exists()
    main([*build, "--codec", "tiny-mimi", "--tokenizer", str(demo_dir / "tokenizer")])  # other options: accepted
    assert "1 samples" in capsys.readouterr().out and (tmp_path / "out" / "shard-000000.tar").is_file()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # the index's tokenizer path resolves from here too
    main(["data", "inspect", str(tmp_path / "out" / "shard-000000.tar")])
    assert "layout: " in (out := capsys.readouterr().out) and " positions, " in out and "not loadable" not in out


def test_speaker_and_codec_mismatches_are_found_at_start_from_index_json(tmp_path, demo_dir, capsys):
    train = tmp_path / "train"
    shutil.copytree(demo_dir / "train", train)
    (train / "index.json").write_text(json.dumps({"format": "qinyu-index/v1", "speaker_dims": [32]}))
    line = _error(capsys, *_fit_args(str(train), str(demo_dir / "tokenizer")))
    assert "speaker vectors have 32 dimensions" in line and "--model.init_args.net.speaker_dim 32" in line
    codec = {"name": "mimi", "num_codebooks": 8, "codebook_size": 2048, "frame_rate": 12.5}
    (train / "index.json").write_text(json.dumps({"format": "qinyu-index/v1", "codec": codec, "speaker_dims": [16]}))
    line = _error(capsys, *_fit_args(str(train), str(demo_dir / "tokenizer")))
    assert "shards hold 8 x 2048 codes" in line and "--data.init_args.codebook_size 2048" in line


def test_config_typo_in_a_fit_is_one_line(demo_dir, capsys):
    args = _fit_args(str(demo_dir / "train"), str(demo_dir / "tokenizer"), "--trainer.max_steps", "1")
    line = _error(capsys, *args, "--model.init_args.net.backbone.hiden_size", "96")
    assert line == (
        "qinyu-lit: error: net.backbone (Qwen3Config): unknown key 'hiden_size'; did you mean 'hidden_size'?"
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_dir):
    """A two-step tiny SFT run started from its own folder with relative data and tokenizer paths."""
    import os

    run = tmp_path_factory.mktemp("run")
    shutil.copytree(demo_dir, run / "data")
    before = os.getcwd()
    os.chdir(run)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            main(["fit", "--config", TINY_SFT, "--data.init_args.train", "data/train", "--data.init_args.val", "null",
              "--data.init_args.tokenizer", "data/tokenizer", "--data.init_args.num_workers", "0",
              "--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1",
              "--trainer.logger.init_args.save_dir", "runs"])  # fmt: skip
    finally:
        os.chdir(before)
    # the frozen encoder is in eval mode on purpose: Lightning's warning about it is silenced
    assert not [w for w in caught if "in eval mode" in str(w.message)]
    return run / "checkpoints" / "tiny_sft" / "last.ckpt"  # the recipe's fixed dirpath, under cwd


def test_log_tags_name_sources_not_paths(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained.parents[2] / "runs" / "tiny_sft" / "version_0"))  # run/checkpoints/tiny_sft/last.ckpt
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"data/samples/train", "data/tokens/train"} <= tags  # the source `data/train` is named `train`
    assert not [t for t in tags if t.startswith("data/samples/") and "/" in t[len("data/samples/") :]]


def test_export_and_generate_work_from_another_directory(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # not the folder the run started in
    main(["export", str(trained), "exported"])
    assert (tmp_path / "exported" / "tokenizer").is_dir()
    capsys.readouterr()
    main(["generate", str(trained), "--text", "hello", "--max_new_positions", "8", "--out", "r", "--codec", "tiny-mimi"])
    out = capsys.readouterr().out
    assert "trainable parameters" not in out  # loading to generate does not print the training table
    assert "wrote r.npy and r.txt" in out and (tmp_path / "r.wav").is_file()


def test_generate_user_errors_are_one_line_before_the_model_loads(trained, tmp_path, capsys):
    line = _error(capsys, "generate", str(tmp_path / "nope.ckpt"), "--text", "hi")
    assert line.endswith("nope.ckpt: no such checkpoint (.ckpt from qinyu-lit fit) or export directory")
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are my notes, not audio")
    line = _error(capsys, "generate", str(trained), "--audio", str(not_audio))
    assert f"--audio {not_audio}: not a readable audio file" in line
    assert "trainable parameters" not in capsys.readouterr().out  # the model was never loaded
    wrong = tmp_path / "wrong.ckpt"
    np.save(tmp_path / "x.npy", np.ones(3))
    shutil.copy(tmp_path / "x.npy", wrong)
    assert "not a qinyu-lit checkpoint" in _error(capsys, "export", str(wrong), str(tmp_path / "e"))


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(QinYuError, match="no such checkpoint"):
        main(["generate", str(tmp_path / "nope.ckpt"), "--text", "hi", "--debug"])
    monkeypatch.setenv("QINYU_LIT_DEBUG", "1")
    with pytest.raises(QinYuError, match="unknown command"):
        main(["persona"])


def test_demo_persona_says_what_it_wrote(tmp_path, capsys):
    main(["demo-persona", str(tmp_path / "captain"), "--dialogues", "2"])
    out = capsys.readouterr().out
    assert f"demo persona 'captain' written to {tmp_path / 'captain'}" in out and "qinyu-lit persona-data" in out


def test_unnamed_sources_get_the_shortest_distinguishing_path_tail():
    from qinyu_lit.data.datamodule import named_sources

    names = [s.name for s in named_sources(["/x/asr/train", "/x/chat/train", "/y/songs/shard-{000..009}.tar"])]
    assert names == ["asr-train", "chat-train", "y-songs"]
    assert [s.name for s in named_sources([{"path": "/x/asr/train", "name": "asr"}, "/x/chat/train"])] == ["asr", "train"]


# ---------------------------------------------------------------------------- LightningCLI's own mistakes, one line each


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--trainer.max_stpes", "3"], "unknown option --trainer.max_stpes; did you mean --trainer.max_steps?"),
        (["--model.init_args.warmup_ration", "0.1"], "model.init_args: SFTStage has no option 'warmup_ration'; did you mean warmup_ratio?"),
        (["--data.init_args.shufle_buffer", "3"], "data.init_args: QinYuDataModule has no option 'shufle_buffer'; did you mean shuffle_buffer?"),
    ],
)  # fmt: skip
def test_a_mistyped_option_is_one_line_naming_the_nearest(args, expected, capsys):
    line = _error(capsys, "fit", "--config", TINY_SFT, *args, "--print_config")
    assert line.startswith(f"qinyu-lit: error: {expected}"), line
    assert len(capsys.readouterr().err.strip().splitlines()) == 0  # _error read the one line already


def test_a_typo_inside_a_config_file_is_one_line(tmp_path, capsys):
    (tmp_path / "trainer.yaml").write_text("trainer:\n  max_stpes: 3\n")
    line = _error(capsys, "fit", "--config", TINY_SFT, "--config", str(tmp_path / "trainer.yaml"), "--print_config")
    assert line == "qinyu-lit: error: unknown option trainer.max_stpes; did you mean trainer.max_steps? (in a --config file)"
    (tmp_path / "data.yaml").write_text("data:\n  init_args:\n    shufle_buffer: 3\n")
    line = _error(capsys, "fit", "--config", TINY_SFT, "--config", str(tmp_path / "data.yaml"), "--print_config")
    assert "QinYuDataModule has no option 'shufle_buffer'; did you mean shuffle_buffer?" in line


def test_a_missing_config_file_is_one_line(tmp_path, capsys):
    line = _error(capsys, "fit", "--config", str(tmp_path / "nowhere.yaml"))
    assert line == f"qinyu-lit: error: --config {tmp_path / 'nowhere.yaml'}: no such file"


def test_debug_keeps_lightning_clis_full_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", TINY_SFT, "--trainer.max_stpes", "3", "--debug"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "unrecognized arguments: --trainer.max_stpes" in err and len(err.splitlines()) > 10


def test_a_tokenizer_folder_that_does_not_exist_is_named(tmp_path, demo_dir, capsys):
    missing = str(tmp_path / "no" / "tokenizer")
    line = _error(capsys, *_fit_args(str(demo_dir / "train"), missing))
    assert line == f"qinyu-lit: error: no such tokenizer folder: {missing}"
    assert not list((tmp_path / "fit_root").rglob("version_*"))  # a run that never stepped leaves no version_N
    manifest = tmp_path / "rows.jsonl"
    manifest.write_text(json.dumps({"task": "text", "turns": [{"role": "user", "text": "hi"},
                                                              {"role": "assistant", "text": "yo"}]}) + "\n")  # fmt: skip
    line = _error(capsys, "data", "build", "--manifest", str(manifest), "--out", str(tmp_path / "out"),
                  "--codec", "tiny-mimi", "--tokenizer", missing, "--progress", "false")  # fmt: skip
    assert line == f"qinyu-lit: error: no such tokenizer folder: {missing}"
