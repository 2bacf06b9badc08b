"""XY-Tokenizer behind the ``AudioCodec`` interface, loaded from the user's own install.

The "install" is a small stand-in module the test writes to a folder and the codec imports by
path, with the real package's API (``XY_Tokenizer.load_from_checkpoint``, ``nq``, the rates,
``encode -> codes_list``, ``decode -> syn_wav_list``): what is under test is our loading path,
the rates and sizes recorded in the shards, and that ``data build``'s default codec makes shards
the shipped recipes train on without a codec mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from qinyu_lit.data.index import check_index_codec
from qinyu_lit.data.layout import TokenLayout
from qinyu_lit.data.schema import decode_sample
from qinyu_lit.data.tar import iter_raw_samples
from qinyu_lit.data.tokenizer import load_tokenizer
from qinyu_lit.prep.build import build
from qinyu_lit.prep.codecs import XYTokenizerCodec, load_codec, resolve_codec_class, write_wav
from tests.prep.test_build import write_tone

RECIPES = Path(__file__).parents[2] / "recipes"

STANDIN = '''
"""Stand-in for MOSS-TTSD's xy_tokenizer/model.py: same API, codes from each 80 ms frame's level."""
import torch
import yaml


class XY_Tokenizer(torch.nn.Module):
    def __init__(self, generator_params):
        super().__init__()
        self.input_sample_rate = generator_params["input_sample_rate"]
        self.output_sample_rate = generator_params["output_sample_rate"]
        self.encoder_downsample_rate = 1280
        self.decoder_upsample_rate = self.output_sample_rate * 1280 // self.input_sample_rate
        self.nq = generator_params["quantizer_kwargs"]["num_quantizers"]
        self.offsets = torch.nn.Parameter(torch.zeros(self.nq))

    @classmethod
    def load_from_checkpoint(cls, config_path, ckpt_path):
        with open(config_path) as f:
            model = cls(yaml.safe_load(f)["generator_params"])
        model.load_state_dict(torch.load(ckpt_path, map_location="cpu")["generator"])
        return model

    def encode(self, wav_list, overlap_seconds=10, device=torch.device("cuda")):
        out = []
        for w in wav_list:
            n = len(w) // self.encoder_downsample_rate
            level = (w[: n * 1280].reshape(n, 1280).pow(2).mean(1).sqrt() * 1000).long()
            out.append(torch.stack([(level + int(o)) % 1024 for o in self.offsets]))
        return {"codes_list": out}

    def decode(self, codes_list, overlap_seconds=10, device=torch.device("cuda")):
        return {"syn_wav_list": [c[0].float().repeat_interleave(self.decoder_upsample_rate) / 1024 for c in codes_list]}
'''


@pytest.fixture(scope="module")
def install(tmp_path_factory):
    """(checkpoint folder, source folder) of a user's XY-Tokenizer install."""
    root = tmp_path_factory.mktemp("xy")
    pkg = root / "XY_Tokenizer" / "xy_tokenizer"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "model.py").write_text(STANDIN)
    ckpt = root / "ckpt"
    ckpt.mkdir()
    params = dict(input_sample_rate=16000, output_sample_rate=32000, quantizer_kwargs=dict(num_quantizers=8, codebook_size=1024))
    (ckpt / "xy_tokenizer_config.yaml").write_text(yaml.safe_dump({"generator_params": params}))
    torch.save({"generator": {"offsets": torch.arange(8.0) * 100}}, ckpt / "xy_tokenizer.ckpt")
    return ckpt, root / "XY_Tokenizer"


def test_xy_codec_records_its_rates_and_sizes(install, tmp_path):
    ckpt, source = install
    codec = XYTokenizerCodec({"checkpoint": str(ckpt), "source": str(source)})
    assert codec.info.__dict__ == dict(name="xy_tokenizer", num_codebooks=8, codebook_size=1024, frame_rate=12.5, sample_rate=16000)
    assert codec.output_sample_rate == 32000
    wave = np.concatenate([np.full(1280, 0.1), np.full(1280, 0.3), np.full(700, 0.2)]).astype(np.float32)
    (codes,) = codec.encode([wave])
    # 2 whole frames of 1280 samples; codebook j = the frame's level + the checkpoint's offset 100 j
    assert codes.dtype == np.int64 and codes.tolist() == [[100 + 100 * j, 300 + 100 * j] for j in range(8)]
    assert codec.decode(codes).shape == (2 * 2560,)  # 80 ms per frame at 32 kHz
    n, rate = write_wav(torch.from_numpy(codes), codec, str(tmp_path / "out.wav"))
    assert (n, rate) == (5120, 32000) and sf.info(str(tmp_path / "out.wav")).samplerate == 32000


def test_missing_install_and_checkpoint_name_the_flag(install):
    ckpt, source = install
    with pytest.raises(ValueError, match=r"XY-Tokenizer is not installed: cannot import XY_Tokenizer from 'xy_nowhere\.model'.*--codec"):
        XYTokenizerCodec({"checkpoint": str(ckpt), "module": "xy_nowhere.model"})
    with pytest.raises(ValueError, match="--codec: give the XY-Tokenizer checkpoint folder"):
        load_codec(resolve_codec_class("auto", None))  # data build without --codec
    with pytest.raises(ValueError, match=r"--codec: .*xy_tokenizer\.ckpt does not exist"):
        XYTokenizerCodec(str(source))
    with pytest.raises(ValueError, match="--num_quantizers 4: this XY-Tokenizer has 8 codebooks"):
        XYTokenizerCodec({"checkpoint": str(ckpt), "source": str(source)}, num_quantizers=4)


def test_auto_codec_class():
    assert resolve_codec_class("auto", None).endswith("XYTokenizerCodec")
    assert resolve_codec_class("auto", {"checkpoint": "x"}).endswith("XYTokenizerCodec")
    assert resolve_codec_class("auto", {"hidden_size": 32}).endswith("MimiCodec")  # MimiConfig fields
    assert resolve_codec_class("auto", "kyutai/mimi").endswith("MimiCodec")
    assert resolve_codec_class("my.Codec", None) == "my.Codec"


def test_default_build_shards_train_under_the_shipped_recipes(install, tmp_path, demo_dir):
    ckpt, source = install
    write_tone(tmp_path / "a.wav", 1.0, 16000, 1, "WAV", 330)
    row = {"key": "k", "task": "tts", "turns": [{"role": "user", "text": "say"}, {"role": "assistant", "text": "la", "audio": "a.wav"}]}
    (tmp_path / "m.jsonl").write_text(json.dumps(row) + "\n")
    report = build(  # no --codec_class: the default codec
        manifest=str(tmp_path / "m.jsonl"), out=str(tmp_path / "out"), tokenizer=str(demo_dir / "tokenizer"),
        codec={"checkpoint": str(ckpt), "source": str(source)}, progress=False,
    )  # fmt: skip
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["codec"] == dict(name="xy_tokenizer", num_codebooks=8, codebook_size=1024, frame_rate=12.5, sample_rate=16000)
    (sample,) = [decode_sample(raw) for raw in iter_raw_samples(report.shards)]
    assert sample.turns[1].codes.shape == (8, 12)  # 16000 // 1280 frames
    tok = load_tokenizer(demo_dir / "tokenizer")
    for recipe in ("align.yaml", "pretrain.yaml", "sft.yaml", "persona_lora.yaml"):
        data = yaml.safe_load((RECIPES / recipe).read_text())["data"]["init_args"]
        sizes = data.get("num_codebooks", 8), data.get("codebook_size", 1024)  # the DataModule's defaults
        assert sizes == (8, 1024), recipe
        check_index_codec(tmp_path / "out", *sizes)  # the fail-fast check of prepare_data
        TokenLayout(tok, num_codebooks=sizes[0], codebook_size=sizes[1]).build(sample)  # the per-sample check
