"""VoiceDesign end to end: the tiny recipe learns the demo's described voices; the command, the
`generate --voice_description` path and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import qinyu_lit.inference as inference
from qinyu_lit.cli import main
from qinyu_lit.data.errors import QinYuError
from qinyu_lit.data.voice_design import read_pairs
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.weights import save_exported
from qinyu_lit.stages.voice_design_cli import load_voice_design

RECIPE = Path(__file__).parents[2] / "recipes" / "tiny" / "voice_design.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(demo_dir, tmp_path_factory, one_thread):
    """The tiny recipe as shipped (~30 s on one core), run in a temporary directory on the demo's voices."""
    import os

    work = tmp_path_factory.mktemp("vd")
    old = os.getcwd()
    os.chdir(work)
    try:
        main(["fit", "--config", str(RECIPE), "--trainer.enable_progress_bar", "false",
              "--data.init_args.train", str(demo_dir / "voices" / "train.jsonl"),
              "--data.init_args.val", str(demo_dir / "voices" / "val.jsonl"),
              "--model.init_args.net.tokenizer", str(demo_dir / "tokenizer")])  # fmt: skip
    finally:
        os.chdir(old)
    return work


def _held_out(demo_dir):
    rows = [json.loads(line) for line in (demo_dir / "voices" / "val.jsonl").read_text().splitlines()]
    return [r["description"] for r in rows], np.array([r["voice_class"] for r in rows]), np.load(demo_dir / "voices" / "centroids.npy")


def test_tiny_recipe_designs_the_described_class_and_not_without_the_text(trained, demo_dir):
    model = load_voice_design(str(trained / "checkpoints" / "tiny_voice_design" / "last.ckpt"))
    texts, classes, centroids = _held_out(demo_dir)  # identities never seen in training
    unit = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    results = {}
    for name, kw in {"guided": {}, "unconditional": {"unconditional": True}}.items():
        sampled = model.sample(texts, seed=0, **kw).numpy()
        nearest = ((sampled[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
        cosine = (sampled / np.linalg.norm(sampled, axis=1, keepdims=True) * unit[classes]).sum(1).mean()
        results[name] = (float((nearest == classes).mean()), float(cosine))
    assert results["guided"][0] >= 0.9 and results["guided"][1] >= 0.8, results
    assert results["unconditional"][0] <= 0.25, results  # chance: 1/8


def test_training_logged_the_flow_loss_the_cosines_and_the_picture(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((trained / "runs").rglob("events.out.tfevents.*")).parent)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/flow_loss", "val/flow_loss", "val/cosine_guided", "val/cosine_conditional", "val/cosine_unconditional"} <= scalars
    loss = [e.value for e in events.Scalars("train/flow_loss")]
    assert np.isfinite(loss[0]) and np.mean(loss[-5:]) < 0.7 * np.mean(loss[:5])
    assert "val/embeddings_2d" in events.Tags()["images"]


def test_voice_design_command_writes_the_seeded_vector(trained, tmp_path, capsys):
    ckpt = str(trained / "checkpoints" / "tiny_voice_design" / "last.ckpt")
    out = tmp_path / "voice.npy"
    main(["voice-design", "a calm senior man, a poet", "--checkpoint", ckpt, "--out", str(out), "--seed", "5"])
    vec = np.load(out)
    again = load_voice_design(ckpt).sample(["a calm senior man, a poet"], seed=5)[0].numpy()
    assert vec.shape == (16,) and np.array_equal(vec, again)
    assert "wrote" in capsys.readouterr().out


def _one_line_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        main(args)
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def test_bad_commands_are_one_line_and_write_nothing(trained, tmp_path, capsys):
    ckpt = str(trained / "checkpoints" / "tiny_voice_design" / "last.ckpt")
    out = tmp_path / "v.npy"
    assert "description: empty" in _one_line_error(["voice-design", " ", "--checkpoint", ckpt, "--out", str(out)], capsys)
    other = tmp_path / "sft.ckpt"  # what a speech-LM stage's checkpoint says about itself
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "qinyu_lit.stages.sft.SFTStage"}}, other)
    err = _one_line_error(["voice-design", "a calm man", "--checkpoint", str(other), "--out", str(out)], capsys)
    assert "a checkpoint of SFTStage, not of VoiceDesignStage" in err
    assert not list(tmp_path.glob("v.npy*"))


def test_generate_with_a_voice_description_feeds_the_designed_voice(trained, demo_dir, tiny_net, tmp_path, monkeypatch):
    torch.manual_seed(0)
    export = save_exported(QinYuModel(tiny_net).eval(), tmp_path / "export")
    seen = []
    real = inference.generate
    monkeypatch.setattr(inference, "generate", lambda model, batch, **kw: seen.append(batch) or real(model, batch, **kw))
    ckpt = str(trained / "checkpoints" / "tiny_voice_design" / "last.ckpt")
    text = "a cheerful young woman, a nurse"
    main(["generate", str(export), "--text", "hot", "--voice_description", text, "--voice_design", ckpt,
          "--max_new_positions", "4", "--out", str(tmp_path / "reply")])  # fmt: skip
    designed = load_voice_design(ckpt).sample([text], seed=0)[0]
    assert len(seen) == 1 and seen[0]["speakers"].shape == (1, 16)
    torch.testing.assert_close(seen[0]["speakers"][0].float(), designed)


def test_bad_training_rows_are_named_counted_and_skipped(tmp_path):
    good = {"description": "a calm man", "embedding": [0.0] * 16}
    rows = [good, {"description": "", "embedding": [0.0] * 16}, {"description": "a man", "embedding": [0.0] * 8},
            {"description": "a man", "embedding": "missing.npy"}, {"description": "a man", "wav": "x.wav"}]  # fmt: skip
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    with pytest.warns(UserWarning) as caught:
        pairs = read_pairs(str(path), 16)
    assert len(pairs.descriptions) == 1 and len(pairs.bad) == 5 and len(caught) == 5
    assert f"{path}:3: embedding: size [8], expected [16] (data.embedding_dim)" in pairs.bad[1]
    assert "description: missing or empty" in pairs.bad[0] and "voice-design-data" in pairs.bad[3]
    path.write_text(json.dumps(rows[2]) + "\n")
    with pytest.warns(UserWarning), pytest.raises(QinYuError, match="no usable"):
        read_pairs(str(path), 16)


def test_recipes_parse(capsys):
    for recipe in (RECIPE, RECIPE.parents[1] / "voice_design.yaml"):
        with pytest.raises(SystemExit) as done:
            main(["fit", "--config", str(recipe), "--print_config"])
        assert done.value.code in (0, None)
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["class_path"] == "qinyu_lit.stages.voice_design.VoiceDesignStage"
        # the size is set once, on the data side, and linked to the model
        assert "embedding_dim" in printed["data"]["init_args"] and "embedding_dim" not in printed["model"]["init_args"]["net"]
        header = recipe.read_text().splitlines()[:5]
        assert any(h.startswith("# Needs:") for h in header) and any(h.startswith("# Launch: qinyu-lit") for h in header)


def test_a_persona_voiced_by_a_description_alone(trained, tmp_path):
    """description -> voice -> persona shards: a designed .npy is the persona folder's whole voice/."""
    from qinyu_lit.prep.persona_data import DEMO_RULE, build_persona, make_demo_persona

    src = make_demo_persona(tmp_path / "captain_src")
    for clip in (src / "voice").iterdir():
        clip.unlink()  # no recordings of this character
    ckpt = str(trained / "checkpoints" / "tiny_voice_design" / "last.ckpt")
    main(["voice-design", "a calm senior woman, a starship captain", "--checkpoint", ckpt, "--out", str(src / "voice" / "designed.npy")])
    out = build_persona(src, tmp_path / "captain", DEMO_RULE)
    card = json.loads((out / "persona.json").read_text())
    np.testing.assert_allclose(card["voice"], np.load(src / "voice" / "designed.npy"), rtol=1e-6)


def test_persona_reply_with_a_voice_description_feeds_the_designed_voice_and_prompt(trained, tiny_net, tmp_path, monkeypatch):
    from qinyu_lit.prep.persona_data import DEMO_RULE, build_persona, make_demo_persona
    from qinyu_lit.stages import PersonaStage
    from qinyu_lit.stages.checkpoints import save_adapter

    torch.manual_seed(0)
    base = save_exported(QinYuModel(tiny_net).eval(), tmp_path / "base")
    shards = build_persona(make_demo_persona(tmp_path / "src"), tmp_path / "captain", DEMO_RULE)
    stage = PersonaStage(tiny_net, init_from=str(base), persona_card=str(shards / "persona.json"), lora_r=4)
    stage.configure_model()
    adapter = save_adapter(stage, tmp_path / "captain_adapter")
    seen = []
    monkeypatch.setattr("qinyu_lit.persona_bank.reply_to", lambda model, **kw: seen.append(kw) or inference.reply_to(model, **kw))
    ckpt = str(trained / "checkpoints" / "tiny_voice_design" / "last.ckpt")
    text = "a calm senior woman, a starship captain"
    main(["persona-reply", str(base), str(adapter), "hot", "--voice_description", text, "--voice_design", ckpt, "--max_new_positions", "2",
          "--out", str(tmp_path / "reply")])  # fmt: skip
    card = json.loads((shards / "persona.json").read_text())
    assert seen[0]["system"] == f"{card['system_prompt']}\n{text}"
    np.testing.assert_array_equal(seen[0]["speaker"], load_voice_design(ckpt).sample([text], seed=0)[0].numpy())
