"""The persona workflow: character folder -> shards -> LoRA -> adapters switched on one base."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import soundfile
import torch

from qinyu_lit.data.mixture import expand_shards
from qinyu_lit.data.schema import decode_sample
from qinyu_lit.data.tar import iter_raw_samples
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.weights import save_exported
from qinyu_lit.persona_bank import PersonaBank
from qinyu_lit.prep.persona_data import (
    DEMO_RULE,
    XY_TOKENIZER,
    build_persona,
    load_profile,
    make_demo_persona,
    persona_voice,
)
from qinyu_lit.prep.speakers import WavLMSpeakerEncoder
from qinyu_lit.stages import PersonaStage
from qinyu_lit.stages.checkpoints import save_adapter
from qinyu_lit.tiny_configs import TINY_WAVLM

from .helpers import demo_data, fit_steps

WAVLM = TINY_WAVLM  # 16-d x-vectors


def build(tmp_path, name="captain", voice=0, dialogues=6):
    src = make_demo_persona(tmp_path / f"{name}_src", name, voice, dialogues)
    return src, build_persona(src, tmp_path / name, DEMO_RULE)


def test_persona_shards_carry_prompt_and_mean_voice(tmp_path):
    src, out = build(tmp_path)
    clips = [np.load(p) for p in sorted((src / "voice").glob("*.npy"))]
    card = json.loads((out / "persona.json").read_text())
    np.testing.assert_allclose(card["voice"], np.mean(clips, axis=0), rtol=1e-6)
    assert card["profile"]["temperament"] == "calm and kind, speaks briefly"
    samples = [decode_sample(raw) for raw in iter_raw_samples(expand_shards(str(out / "train")))]
    assert len(samples) == 6 and {s.task for s in samples} == {"persona"}
    assert all(
        s.system == card["system_prompt"] == load_profile(src / "profile.yaml").prompt() for s in samples
    )
    assert all(np.array_equal(s.agent_speaker, np.asarray(card["voice"], dtype=np.float32)) for s in samples)
    assert all(s.turns[-1].codes.shape[0] == 8 for s in samples)
    spoken = [s.turns[0].audio is not None for s in samples]  # the demo asks half its questions by voice
    assert 0 < sum(spoken) < len(samples) and all(bool(s.turns[0].text) != said for s, said in zip(samples, spoken, strict=True))


def test_voice_from_clips_uses_the_speaker_encoder(tmp_path):
    src = make_demo_persona(tmp_path / "src", dialogues=1)
    for npy in (src / "voice").glob("*.npy"):
        npy.unlink()
    voice = persona_voice(src / "voice", speaker_model=WAVLM)
    encoder = WavLMSpeakerEncoder(WAVLM)
    expected = np.mean(
        [encoder.embed(*soundfile.read(p, dtype="float32")) for p in sorted((src / "voice").glob("*.wav"))], 0
    )
    assert voice.shape == (16,)
    np.testing.assert_allclose(voice, expected, rtol=1e-5, atol=1e-6)


def test_profile_and_dialogue_errors_name_the_field(tmp_path):
    src = make_demo_persona(tmp_path / "src", dialogues=2)
    (src / "profile.yaml").write_text("name: X\ndemographics: a\nsocial_identity: b\nvocal_style: d\n")
    with pytest.raises(ValueError, match=r"profile.yaml: field 'temperament'"):
        build_persona(src, tmp_path / "out")
    make_demo_persona(src, dialogues=2)
    np.save(src / "codes" / "a1.npy", np.zeros((3, 5), dtype=np.int16))
    with pytest.raises(ValueError, match=r"dialogues.jsonl:2: turns\[1\].codes has shape \(3, 5\)"):
        build_persona(src, tmp_path / "out", replace(XY_TOKENIZER, codebook_size=64))


@torch.no_grad()
def logits(model, batch):
    model.eval()
    hidden = model.hidden_states(batch)
    return torch.cat([model.head0_logits(hidden).flatten(), model.code_logits(hidden).flatten()])


def test_two_personas_switch_on_one_base_without_changing_it(tiny_net, demo_dir, tmp_path):
    torch.manual_seed(0)
    base_dir = save_exported(QinYuModel(tiny_net), tmp_path / "base")
    stages, cards = {}, {}
    for name, voice, heads in (("captain", 0, False), ("robot", 2, True)):
        _, shards = build(tmp_path, name, voice)
        stage = PersonaStage(tiny_net, init_from=str(base_dir), persona_card=str(shards / "persona.json"),
                             lora_r=4, lora_dropout=0.0, train_heads=heads)  # fmt: skip
        stage.configure_model()
        fit_steps(stage, demo_dir, steps=2, train=shards / "train")
        save_adapter(stage, tmp_path / f"{name}_adapter")
        stages[name], cards[name] = stage.eval(), stage.persona_card

    batch = next(iter(demo_data(demo_dir, batch_size=2).train_dataloader()))
    base = QinYuModel.from_pretrained(str(base_dir))
    base_logits = logits(base, batch)
    bank = PersonaBank(QinYuModel.from_pretrained(str(base_dir)))
    for name in stages:
        assert bank.add(name, tmp_path / f"{name}_adapter")["system_prompt"] == cards[name]["system_prompt"]
    for name in ("robot", "captain", None, "robot", None):
        bank.use(name)
        expected = base_logits if name is None else logits(stages[name].model, batch)
        torch.testing.assert_close(logits(bank.model, batch), expected, rtol=0, atol=1e-6)
    assert not torch.allclose(logits(stages["robot"].model, batch), logits(stages["captain"].model, batch))

    # replying as a persona uses its system prompt and voice
    from qinyu_lit.inference import reply_to

    said = bank.reply("hello world", persona="captain", max_new_positions=12)
    same = reply_to(bank.model, text="hello world", system=cards["captain"]["system_prompt"],
                    speaker=np.asarray(cards["captain"]["voice"], dtype=np.float32), max_new_positions=12)  # fmt: skip
    assert said.text_ids == same.text_ids and torch.equal(said.codes, same.codes)


def test_recorded_replies_become_a_data_build_manifest(tmp_path):
    """Assistant recordings need the codec: the folder becomes a manifest that `qinyu-lit data build` accepts."""
    from qinyu_lit.prep.manifest import scan_manifest

    src = make_demo_persona(tmp_path / "src", dialogues=3)
    docs = [json.loads(line) for line in (src / "dialogues.jsonl").read_text().splitlines()]
    for i, doc in enumerate(docs):
        doc["turns"][1] = {"role": "assistant", "text": doc["turns"][1]["text"], "audio": f"clips/q{i}.wav"}

    def write(dialogues):
        (src / "dialogues.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dialogues))

    coded = {"role": "assistant", "text": "x", "codes": "codes/a1.npy"}  # a mix cannot go through the codec
    write([docs[0], {**docs[1], "turns": [docs[1]["turns"][0], coded]}])
    with pytest.raises(ValueError, match=r"dialogues.jsonl:2: codes without a recording"):
        build_persona(src, tmp_path / "out")
    write(docs)
    out = build_persona(src, tmp_path / "out")
    assert not (out / "train").exists() and (out / "persona.json").is_file()
    scan = scan_manifest(out / "manifest.jsonl")
    assert len(scan.rows) == 3 and not scan.bad
    assert {r.task for r in scan.rows} == {"persona"}
    assert all(r.system == load_profile(src / "profile.yaml").prompt() for r in scan.rows)
    np.testing.assert_array_equal(
        np.load(out / "voice.npy"), json.loads((out / "persona.json").read_text())["voice"]
    )
