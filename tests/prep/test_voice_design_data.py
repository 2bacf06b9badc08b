"""`qinyu-lit voice-design-data`: pairs from embeddings, recordings and persona folders; bad rows named and counted."""

from __future__ import annotations

import json

import numpy as np
import soundfile

from qinyu_lit.cli import main
from qinyu_lit.data.voice_design import read_pairs
from qinyu_lit.prep.demo import demo_speech
from qinyu_lit.prep.persona_data import load_profile, make_demo_persona
from qinyu_lit.prep.speakers import WavLMSpeakerEncoder
from qinyu_lit.prep.voice_design_data import profile_description
from qinyu_lit.tiny_configs import TINY_WAVLM


def test_pairs_from_a_manifest_and_a_persona_folder(tmp_path, capsys):
    np.save(tmp_path / "a.npy", np.ones(16, np.float32))
    for i in range(2):
        soundfile.write(tmp_path / f"c{i}.wav", demo_speech("hot sun", i), 16000)
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    rows = [{"description": "a calm man", "embedding": "a.npy"}, {"description": "a cheerful woman", "wavs": ["c0.wav", "c1.wav"]},
            {"description": "x", "wav": "broken.wav"}, {"embedding": "a.npy"}]  # fmt: skip
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    persona = make_demo_persona(tmp_path / "captain")
    out = tmp_path / "pairs.jsonl"
    main(["voice-design-data", str(out), "--manifest", f'["{tmp_path / "m.jsonl"}"]', "--persona", f'["{persona}"]',
          "--speaker_model", json.dumps(TINY_WAVLM)])  # fmt: skip
    printed = capsys.readouterr().out
    assert "3 pairs, 2 bad rows or folders skipped" in printed
    assert f"{tmp_path / 'm.jsonl'}:3: wav broken.wav: unreadable" in printed and "m.jsonl:4: description: missing" in printed
    pairs = read_pairs(str(out), 16)
    encoder = WavLMSpeakerEncoder(TINY_WAVLM)
    mean = np.mean([encoder.embed(demo_speech("hot sun", i), 16000) for i in range(2)], axis=0)
    np.testing.assert_allclose(pairs.embeddings[1], mean, rtol=1e-5, atol=1e-6)
    clips = [np.load(p) for p in sorted((persona / "voice").glob("*.npy"))]
    np.testing.assert_allclose(pairs.embeddings[2], np.mean(clips, axis=0), rtol=1e-6)
    assert pairs.descriptions[2] == profile_description(load_profile(persona / "profile.yaml"))
