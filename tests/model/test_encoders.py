"""The backbone and both encoders build from a pretrained directory or a random config, same classes."""

import numpy as np
import pytest
import torch

from qinyu_lit.data.batch import collate
from qinyu_lit.data.features import FbankLFR, WhisperMel
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.schema import CodecInfo, Sample, Turn
from qinyu_lit.model.encoders import build_audio_encoder, build_backbone
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.tiny_configs import TINY_FUN_ASR_NANO as TINY_ENCODER
from qinyu_lit.tiny_configs import TINY_WHISPER, tiny_backbone


def test_pretrained_directory_and_config_build_the_same_classes(tmp_path):
    torch.manual_seed(0)
    random_lm = build_backbone(tiny_backbone())
    assert type(random_lm).__name__ == "Qwen3ForCausalLM"
    random_lm.save_pretrained(tmp_path / "lm")
    loaded = build_backbone(str(tmp_path / "lm"))
    assert type(loaded) is type(random_lm)
    for (n, a), (_, b) in zip(random_lm.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), n

    enc = build_audio_encoder(dict(TINY_ENCODER), "fun_asr_nano")
    assert type(enc).__name__ == "FunAsrNanoEncoder"
    enc.save_pretrained(tmp_path / "enc")
    loaded_enc = build_audio_encoder(str(tmp_path / "enc"), "fun_asr_nano")
    assert type(loaded_enc) is type(enc)
    for (n, a), (_, b) in zip(enc.state_dict().items(), loaded_enc.state_dict().items(), strict=True):
        assert torch.equal(a, b), n
    whisper = build_audio_encoder(dict(TINY_WHISPER), "whisper")
    assert type(whisper).__name__ == "WhisperEncoder"


@pytest.mark.parametrize("kind, front_end, spec", [("fun_asr_nano", FbankLFR(), TINY_ENCODER), ("whisper", WhisperMel(), TINY_WHISPER)])
def test_user_speech_fills_every_placeholder(tiny_net, kind, front_end, spec):
    tiny_net.audio_encoder, tiny_net.audio_encoder_type = dict(spec), kind
    model = QinYuModel(tiny_net)
    layout = TokenLayout(model.tokenizer, (1, 8, 4, 8), 8, 64, front_end=front_end)
    wavs = [np.sin(np.arange(n) / 7).astype(np.float32) * 0.2 for n in (8000, 20000)]
    rows = [[layout.build(Sample(f"k{i}", "asr", [Turn("user", "", w, 16000), Turn("assistant", "hello")], CodecInfo("t", 8, 64, 12.5, 16000)))]
            for i, w in enumerate(wavs)]  # fmt: skip
    batch = collate(rows, layout.ids.pad, 8)
    n_placeholders = int((batch["input_ids"] == layout.ids.audio).sum())
    expected = sum(front_end.num_outputs(f) for f in (front_end(w, 16000) for w in wavs))
    assert n_placeholders == expected
    embeds = model.embed_inputs(batch)
    plain = model.backbone.get_input_embeddings()(batch["input_ids"])
    filled = batch["input_ids"] == layout.ids.audio
    assert not torch.allclose(embeds[filled], plain[filled])  # replaced by the adapter output
    out = model.loss(batch)
    out.loss.backward()
    assert model.adapter[1].weight.grad.abs().sum() > 0  # the adapter learns ...
    assert all(p.grad is None for p in model.audio_encoder.parameters())  # ... the encoder stays frozen
