"""Speaker embeddings: one float32 vector per voice, injected at ``<|speaker|>`` positions.

The paper uses CAM++ (192-d) vectors. Two sources here:

* ``WavLMSpeakerEncoder``: transformers ``WavLMForXVector`` (pretrained
  ``microsoft/wavlm-base-plus-sv``, 512-d x-vectors), or a dict of ``WavLMConfig`` fields
  for a random one in tests;
* precomputed ``.npy`` files (CAM++ or anything else), named in the manifest.

An agent voice is the mean over up to N utterance embeddings of that voice (the paper uses
100): ``voice_embedding``. Any dimension works as long as the model's ``speaker_dim``
matches it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.features import resample


class WavLMSpeakerEncoder:
    """x-vectors from transformers ``WavLMForXVector``.

    Args:
        model: a pretrained name or directory (``microsoft/wavlm-base-plus-sv``), or a dict
            of ``WavLMConfig`` fields for a randomly initialised encoder.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        seed: seed of the random weights when ``model`` is a dict.
    """

    sample_rate = 16000

    def __init__(
        self, model: str | dict = "microsoft/wavlm-base-plus-sv", device: str = "cpu", seed: int = 0
    ):
        from transformers import WavLMConfig, WavLMForXVector

        if isinstance(model, dict):
            from ..data.errors import check_config_dict

            check_config_dict(WavLMConfig, model, "--speaker_encoder")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self.model = WavLMForXVector(WavLMConfig(**model))
        else:
            self.model = WavLMForXVector.from_pretrained(model)
        self.model.to(device).eval()
        self.device = torch.device(device)
        self.dim = int(self.model.config.xvector_output_dim)

    @torch.inference_mode()
    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """One clip -> a float32 vector ``[dim]``.

        Clips go through one at a time: with WavLM's group-norm feature encoder, zero padding
        in a batch would change the embedding, and a voice must not depend on its batch-mates.
        """
        wav = resample(np.asarray(wav, dtype=np.float32), sample_rate, self.sample_rate)
        # the feature extractor's do_normalize: zero mean, unit variance per utterance
        wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
        x = torch.from_numpy(wav)[None].to(self.device)
        return self.model(input_values=x).embeddings[0].float().cpu().numpy()


def load_embedding(path: str | Path) -> np.ndarray:
    """A ``.npy`` speaker vector (no pickle); raises ``ValueError`` with the reason when unusable."""
    try:
        vec = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"embedding file {path} not found") from None
    except Exception as e:  # numpy raises several types for garbage
        raise ValueError(f"{path} is not a readable .npy array ({type(e).__name__}: {e})") from None
    vec = np.squeeze(vec)
    if vec.ndim != 1 or vec.size == 0:
        raise ValueError(
            f"{path}: a speaker embedding must be a non-empty vector, got shape {list(vec.shape)}"
        )
    if not np.isfinite(vec).all():
        raise ValueError(f"{path}: speaker embedding contains NaN or inf")
    return vec.astype(np.float32)


def voice_embedding(embeddings: Sequence[np.ndarray], max_clips: int = 100) -> np.ndarray:
    """The agent voice: mean over the first ``max_clips`` utterance embeddings of that voice."""
    if not embeddings:
        raise ValueError("a voice needs at least one utterance embedding")
    return np.mean(np.stack(list(embeddings)[:max_clips]), axis=0).astype(np.float32)
