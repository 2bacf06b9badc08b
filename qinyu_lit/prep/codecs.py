"""Audio codecs for the offline encode path: ``--codec_class`` import paths, XY-Tokenizer, checks.

The shard builder only needs the small ``AudioCodec`` interface (``qinyu_lit/codec.py``, the
run-time codec layer that also holds ``MimiCodec`` and the codes -> WAV helpers), so any codec
with the paper's shape can be plugged in by import path (``qinyu-lit data build --codec_class
my_pkg.XYTokenizerCodec``). XY-Tokenizer (the paper's codec: 8 x 1024 codes at 12.5 Hz from
16 kHz input) has no transformers class and is wrapped here. ``--codec tiny-mimi`` is a tiny
random Mimi that needs no download: it exercises the whole pipeline (shapes, rates, decoding),
never content: use pretrained weights (``kyutai/mimi``) for real data. ``constant_codes`` spots a
codec whose codes carry nothing (``data build`` warns).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence

import numpy as np
import torch

from ..codec import (  # noqa: F401 - the run-time codec layer; re-exported for the offline tools
    OFFLINE_CODECS,
    AudioCodec,
    MimiCodec,
    check_codec,
    valid_codes,
    write_wav,
)


def constant_codes(codes: Sequence[np.ndarray]) -> bool:
    """True when clips of more than one frame in all hold one value per codebook: the codec's
    codes say nothing about the audio (e.g. a random Mimi with zero codebooks)."""
    frames = sum(c.shape[1] for c in codes)
    if frames < 2:
        return False
    joined = np.concatenate(list(codes), axis=1)
    return bool((joined == joined[:, :1]).all())


def load_codec(codec_class: str, **kwargs) -> AudioCodec:
    """Build a codec from its import path (``package.module.ClassName``) and arguments."""
    module_name, _, class_name = codec_class.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ValueError(f"--codec_class {codec_class!r} is not an importable class ({e})") from e
    if not (isinstance(cls, type) and issubclass(cls, AudioCodec)):
        raise ValueError(f"--codec_class {codec_class!r} must subclass qinyu_lit.codec.AudioCodec")
    return cls(**kwargs)


# --------------------------------------------------------------------------- XY-Tokenizer

XY_MODULE = "xy_tokenizer.model"  # MOSS-TTSD's XY_Tokenizer package: class XY_Tokenizer in xy_tokenizer/model.py
_XY_KEYS = ("checkpoint", "config", "module", "source", "overlap_seconds")


class XYTokenizerCodec(AudioCodec):
    """XY-Tokenizer (MOSS-TTSD v0.7), the paper's and the released VITA-QinYu's codec: 8 codebooks
    x 1024 codes at 12.5 Hz from 16 kHz speech, decoded at 32 kHz. Not on PyPI and not a
    transformers class: it is imported from the user's own install (see docs/data.md).

    Args:
        model: the checkpoint folder (``xy_tokenizer_config.yaml`` + ``xy_tokenizer.ckpt``), or a
            dict ``{checkpoint, config, module, source, overlap_seconds}``: ``module`` is the import
            path of the module holding ``XY_Tokenizer`` (default ``xy_tokenizer.model``), ``source``
            a folder put on ``sys.path`` first (a checkout of ``MOSS-TTSD/XY_Tokenizer``),
            ``overlap_seconds`` the overlap of its 30 s windows (10, as the release).
        num_quantizers: must equal the checkpoint's codebook count (8).
        device: where the codec runs.
        seed: unused (the weights come from the checkpoint).
        name: recorded in the shards; default ``xy_tokenizer``.
    """

    def __init__(self, model: str | dict | None = None, num_quantizers: int = 8, device: str = "cpu", seed: int = 0, name=None):
        from pathlib import Path

        spec = dict(model) if isinstance(model, dict) else {"checkpoint": model}
        unknown = sorted(set(spec) - set(_XY_KEYS))
        if unknown:
            raise ValueError(f"--codec: unknown XY-Tokenizer keys {unknown}; allowed {list(_XY_KEYS)}")
        if not spec.get("checkpoint"):
            raise ValueError(
                "--codec: give the XY-Tokenizer checkpoint folder (xy_tokenizer_config.yaml + xy_tokenizer.ckpt), "
                "data build's default codec; or --codec kyutai/mimi for Mimi shards (then data.codebook_size 2048)"
            )
        folder = Path(spec["checkpoint"])
        ckpt = folder if folder.is_file() else folder / "xy_tokenizer.ckpt"
        config = Path(spec.get("config") or ckpt.parent / "xy_tokenizer_config.yaml")
        for path in (ckpt, config):
            if not path.is_file():
                raise ValueError(f"--codec: {path} does not exist (XY-Tokenizer checkpoint folder expected)")
        cls = _import_xy(spec.get("module", XY_MODULE), spec.get("source"))
        self.device = torch.device(device)
        self.model = cls.load_from_checkpoint(config_path=str(config), ckpt_path=str(ckpt)).to(self.device).eval()
        self.num_codebooks = int(self.model.nq)
        if num_quantizers != self.num_codebooks:
            raise ValueError(f"--num_quantizers {num_quantizers}: this XY-Tokenizer has {self.num_codebooks} codebooks")
        self.codebook_size = _xy_codebook_size(config, self.model)
        self.hop = int(self.model.encoder_downsample_rate)  # 1280 samples per code frame at 16 kHz
        self.sample_rate = int(self.model.input_sample_rate)
        self.output_sample_rate = int(self.model.output_sample_rate)  # decode() returns audio at this rate
        self.frame_rate = self.sample_rate / self.hop
        self.overlap = float(spec.get("overlap_seconds", 10))
        self.name = name or "xy_tokenizer"

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop  # whole frames only, as XY-Tokenizer emits them

    @torch.inference_mode()
    def encode(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        if not waves:
            return []
        wavs = [torch.as_tensor(np.asarray(w, dtype=np.float32), device=self.device) for w in waves]
        out = self.model.encode(wavs, overlap_seconds=self.overlap, device=self.device)["codes_list"]
        codes = [c.cpu().numpy().astype(np.int64) for c in out]
        for w, c in zip(waves, codes, strict=True):
            want = (self.num_codebooks, self.num_frames(len(w)))
            if c.shape != want or (c.size and not 0 <= c.min() <= c.max() < self.codebook_size):
                raise ValueError(f"XY-Tokenizer returned codes {c.shape} for {len(w)} samples; expected {want} in [0, {self.codebook_size})")
        return codes

    @torch.inference_mode()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``[8, frames]`` -> mono float32 waveform at ``output_sample_rate`` (32 kHz for v0.7)."""
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.device)
        wav = self.model.decode([codes], overlap_seconds=self.overlap, device=self.device)["syn_wav_list"][0]
        return wav.reshape(-1).float().cpu().numpy()


def _import_xy(module: str, source: str | None):
    import sys

    if source:
        if not os.path.isdir(source):
            raise ValueError(f"--codec: source {source!r} is not a folder (a checkout of MOSS-TTSD/XY_Tokenizer)")
        if source not in sys.path:
            sys.path.insert(0, source)
    try:
        return importlib.import_module(module).XY_Tokenizer
    except (ImportError, AttributeError) as e:
        raise ValueError(
            f"XY-Tokenizer is not installed: cannot import XY_Tokenizer from {module!r} ({e}); install MOSS-TTSD's "
            "XY_Tokenizer or give its checkout: --codec '{checkpoint: DIR, source: PATH/XY_Tokenizer}' (docs/data.md)"
        ) from e


def _xy_codebook_size(config_path, model) -> int:
    import yaml

    params = yaml.safe_load(open(config_path, encoding="utf-8")).get("generator_params", {})
    size = params.get("quantizer_kwargs", {}).get("codebook_size") or getattr(model.quantizer, "codebook_size", None)
    if not size:
        raise ValueError(f"{config_path}: no generator_params.quantizer_kwargs.codebook_size (XY-Tokenizer config expected)")
    return int(size)


def resolve_codec_class(codec_class: str, codec) -> str:
    """``data build``'s ``--codec_class auto``: XY-Tokenizer (8 x 1024, the codec the recipes assume)
    unless ``--codec`` names a Mimi: a dict of ``MimiConfig`` fields (random test codecs) or a
    transformers name / folder (``kyutai/mimi``) that is not an XY-Tokenizer checkpoint folder."""

    if codec_class != "auto":
        return codec_class
    xy = "qinyu_lit.prep.codecs.XYTokenizerCodec"
    if codec is None or (isinstance(codec, dict) and set(codec) & set(_XY_KEYS)):
        return xy
    if isinstance(codec, str) and os.path.isfile(os.path.join(codec, "xy_tokenizer_config.yaml")):
        return xy
    return "qinyu_lit.prep.codecs.MimiCodec"
