"""Audio codecs at run time: codes ``[num_codebooks, frames]`` <-> waveform, and codes -> a WAV.

What training (validation audio), evaluation and inference need from a codec lives here, below
``prep/`` (the offline layer, imported by the CLI alone): the ``AudioCodec`` interface, ``MimiCodec``
(transformers ``MimiModel``, the in-ecosystem codec with the paper's shape), the demo corpus's toy
``DemoRuleCodec`` and the helpers that write a reply's speech. ``prep/codecs.py`` builds on these
for the offline encode path (``--codec_class``, XY-Tokenizer, ``constant_codes``).

Offline codec: ``tiny-mimi`` (``TINY_MIMI``) is a tiny random Mimi that needs no download.
transformers initialises Mimi's codebooks to zeros (they are learned as running means), so a
random Mimi as built emits one code per codebook for any input; ``MimiCodec`` therefore fills a
random codec's codebooks with seeded Gaussian entries, and its codes vary with the input and
decode to (meaningless) audio.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import soundfile as sf
import torch

from .data.errors import check_config_dict
from .data.schema import CodecInfo
from .tiny_configs import TINY_MIMI

# names of codecs that need no download (``--codec tiny-mimi``); a folder of that name wins
OFFLINE_CODECS = {"tiny-mimi": TINY_MIMI}
DEMO_SAMPLE_RATE = 16000  # the demo corpus's audio rate (prep/demo.py)


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


class DemoRuleCodec:
    """A toy decoder so the demo's rule codes can be heard: NOT a speech codec.

    The rule codes carry no waveform, so each frame (80 ms, 12.5 Hz as Mimi) becomes a tone whose
    pitch is set by its codebook-0 code. A WAV of a reply lets you hear its pace and that the same
    words give the same sounds; it is not speech. ``qinyu-lit generate ... --codec demo``.
    """

    name = "demo-rule"
    sample_rate = DEMO_SAMPLE_RATE

    def __init__(self, num_codebooks: int = 8, codebook_size: int = 64):
        self.num_codebooks, self.codebook_size = num_codebooks, codebook_size

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """``codes [num_codebooks, frames]`` -> float32 waveform at ``sample_rate``."""
        n = int(DEMO_SAMPLE_RATE / 12.5)
        t, envelope = np.arange(n) / DEMO_SAMPLE_RATE, np.hanning(n)
        tones = [0.3 * envelope * np.sin(2 * np.pi * (200 + 15 * int(c)) * t) for c in np.asarray(codes)[0]]
        return np.concatenate(tones).astype(np.float32) if tones else np.zeros(0, np.float32)
