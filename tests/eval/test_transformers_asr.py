"""``evaluate --asr NAME``: any transformers speech-recognition model, here a tiny random wav2vec2 CTC of the
real classes (saved to a folder, loaded by name through transformers' own ASR pipeline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

from qinyu_lit.evaluate import TransformersASR


@pytest.fixture(scope="module")
def tiny_ctc_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_ctc")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: i + 5 for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    features = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=features, tokenizer=Wav2Vec2CTCTokenizer(str(folder / "vocab.json"))).save_pretrained(folder)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                            conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


def test_a_transformers_asr_gets_audio_at_its_own_rate_and_returns_text(tiny_ctc_dir):
    asr = TransformersASR(str(tiny_ctc_dir))
    assert asr.sample_rate == 16000  # from the model's feature extractor
    seen = []
    pipe = asr.pipe
    asr.pipe = lambda inputs: seen.append(dict(inputs)) or pipe(inputs)  # the pipeline pops keys
    wav = 0.1 * np.random.default_rng(0).standard_normal(24000).astype(np.float32)  # 1 s at Mimi's 24 kHz
    text = asr.transcribe(wav, 24000)
    assert isinstance(text, str) and text  # a random CTC model still spells something
    assert seen[0]["sampling_rate"] == 16000 and len(seen[0]["raw"]) == 16000  # resampled before the pipeline
