"""Audio codecs: waveform <-> multi-codebook codes ``[num_codebooks, frames]``.

The shard builder only needs the small ``AudioCodec`` interface below, so any codec with
the paper's shape can be plugged in by import path (``qinyu-lit data build --codec_class
my_pkg.XYTokenizerCodec``). XY-Tokenizer (the paper's codec: 8 x 1024 codes at 12.5 Hz
from 16 kHz input) has no transformers class; ``MimiCodec`` wraps transformers'
``MimiModel``, which has the same shape (8 of its 32 quantizers, 2048 codes, 12.5 Hz,
24 kHz input).

Offline codec: ``--codec tiny-mimi`` (``TINY_MIMI``) is a tiny random Mimi that needs no
download. transformers initialises Mimi's codebooks to zeros (they are learned as running
means), so a random Mimi as built emits one code per codebook for any input; ``MimiCodec``
therefore fills a random codec's codebooks with seeded Gaussian entries, and its codes vary
with the input and decode to (meaningless) audio. It exercises the whole pipeline (shapes,
rates, decoding), never content: use pretrained weights (``kyutai/mimi``) for real data.
``constant_codes`` spots a codec whose codes carry nothing (``data build`` warns).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import torch

from ..data.schema import CodecInfo
from ..tiny_configs import TINY_MIMI

# names of codecs that need no download (``--codec tiny-mimi``); a folder of that name wins
OFFLINE_CODECS = {"tiny-mimi": TINY_MIMI}


class AudioCodec:
    """What the shard builder needs from a codec.

    Subclasses set ``name``, ``num_codebooks``, ``codebook_size``, ``frame_rate`` and
    ``sample_rate`` and implement ``encode`` (a batch of mono float32 waveforms at
    ``sample_rate`` -> one int array ``[num_codebooks, frames]`` each) and ``decode``.
    """

    name: str
    num_codebooks: int
    codebook_size: int
    frame_rate: float
    sample_rate: int

    @property
    def info(self) -> CodecInfo:
        """The format record stored in every sample and in the shard index."""
        return CodecInfo(
            self.name, self.num_codebooks, self.codebook_size, float(self.frame_rate), int(self.sample_rate)
        )

    def num_frames(self, num_samples: int) -> int:
        """Frames the codec emits for ``num_samples`` input samples (a partial frame counts)."""
        return max(1, math.ceil(num_samples * self.frame_rate / self.sample_rate))

    def encode(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MimiCodec(AudioCodec):
    """transformers ``MimiModel`` as a codec.

    Args:
        model: a pretrained name or directory (``kyutai/mimi``), or a dict of ``MimiConfig``
            fields for a randomly initialised codec (``{}`` = the full-size architecture;
            ``qinyu_lit.tiny_configs.TINY_MIMI`` = a tiny one for tests).
        num_quantizers: codebooks kept per frame (the paper's model uses 8).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of the random weights when ``model`` is a dict (same seed, same codec in
            every worker process).
        name: recorded in the shards; defaults to the pretrained name or ``mimi-random``.
    """

    def __init__(
        self,
        model: str | dict = "kyutai/mimi",
        num_quantizers: int = 8,
        device: str = "cpu",
        seed: int = 0,
        name: str | None = None,
    ):
        from transformers import MimiConfig, MimiModel

        from ..data.errors import check_config_dict

        default_name = "mimi-random"
        if isinstance(model, str) and model in OFFLINE_CODECS and not os.path.isdir(model):
            model, default_name = dict(OFFLINE_CODECS[model]), f"{model}-random"
        if isinstance(model, dict):
            check_config_dict(MimiConfig, model, "--codec")
            config = MimiConfig(**model)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = MimiModel(config)
                _random_codebooks(self.model)
        else:
            try:
                self.model = MimiModel.from_pretrained(model)
            except OSError as e:  # not on disk and no Hub: say which codec, and the offline one
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise OSError(f"--codec {model!r} cannot be loaded ({first}); offline, use --codec tiny-mimi "
                              "or a local folder") from e  # fmt: skip
            config = self.model.config
            default_name = str(model)
        if not 1 <= num_quantizers <= config.num_quantizers:
            raise ValueError(
                f"num_quantizers must lie in [1, {config.num_quantizers}] for this Mimi, got {num_quantizers}"
            )
        self.model.to(device).eval()
        self.device = torch.device(device)
        self.name = name or default_name
        self.num_codebooks = num_quantizers
        self.codebook_size = int(config.codebook_size)
        self.frame_rate = float(config.frame_rate)
        self.sample_rate = int(config.sampling_rate)

    @torch.inference_mode()
    def encode(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One padded forward pass for the whole batch; each result is cut to its own length."""
        if not waves:
            return []
        longest = max(len(w) for w in waves)
        batch = torch.zeros(len(waves), 1, longest)
        mask = torch.zeros(len(waves), longest, dtype=torch.long)
        for i, w in enumerate(waves):
            batch[i, 0, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
            mask[i, : len(w)] = 1
        out = self.model.encode(
            batch.to(self.device), padding_mask=mask.to(self.device), num_quantizers=self.num_codebooks
        )
        codes = out.audio_codes.cpu().numpy()  # [B, num_codebooks, frames]
        return [codes[i, :, : self.num_frames(len(w))].astype(np.int64) for i, w in enumerate(waves)]

    @torch.inference_mode()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``[num_codebooks, frames]`` -> mono float32 waveform at ``sample_rate``."""
        codes = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.device)[None]
        return self.model.decode(codes).audio_values[0, 0].float().cpu().numpy()


def _random_codebooks(model) -> None:
    """Seeded Gaussian codebook entries for a random Mimi (call under the caller's seed).

    Mimi's codebooks are running means (``embed_sum / cluster_usage``) that start at zero, so
    every frame's nearest entry is entry 0; random entries make the codes follow the input."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("codebook.embed_sum"):
                buf.copy_(torch.randn(buf.shape))
            elif name.endswith(("codebook.cluster_usage", "codebook.initialized")):
                buf.fill_(1.0)


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
        raise ValueError(f"--codec_class {codec_class!r} must subclass qinyu_lit.prep.codecs.AudioCodec")
    return cls(**kwargs)


# --------------------------------------------------------------------------- codes -> speech


def check_codec(model, codec) -> None:
    """The codec must read the codes the model writes: same codebook count and size."""
    if (codec.num_codebooks, codec.codebook_size) != (model.config.num_codebooks, model.config.codebook_size):
        raise ValueError(
            f"the codec {codec.name!r} takes {codec.num_codebooks} x {codec.codebook_size} codes but the model "
            f"writes {model.config.num_codebooks} x {model.config.codebook_size} (net.num_codebooks / net.codebook_size)"
        )


def valid_codes(codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, int]:
    """Replace delay pads / out-of-range ids (a badly trained model can emit them mid-reply) by 0.

    Returns the codes and how many were replaced, so the caller can say so.
    """
    bad = (codes < 0) | (codes >= codebook_size)
    return codes.masked_fill(bad, 0), int(bad.sum())


def write_wav(codes: torch.Tensor, codec, path: str) -> tuple[int, int]:
    """Decode ``codes [C, frames]`` with ``codec`` and write a 16-bit WAV. Returns (samples, sample rate)."""
    codes, _ = valid_codes(codes, int(codec.codebook_size))
    if codes.shape[1]:
        wav = codec.decode(codes.numpy())
    else:
        wav = np.zeros(0, dtype=np.float32)
    rate = int(getattr(codec, "output_sample_rate", codec.sample_rate))  # XY-Tokenizer: 16 kHz in, 32 kHz out
    sf.write(path, wav, rate, subtype="PCM_16")
    return len(wav), rate


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
    import os
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
    import os

    if codec_class != "auto":
        return codec_class
    xy = "qinyu_lit.prep.codecs.XYTokenizerCodec"
    if codec is None or (isinstance(codec, dict) and set(codec) & set(_XY_KEYS)):
        return xy
    if isinstance(codec, str) and os.path.isfile(os.path.join(codec, "xy_tokenizer_config.yaml")):
        return xy
    return "qinyu_lit.prep.codecs.MimiCodec"
