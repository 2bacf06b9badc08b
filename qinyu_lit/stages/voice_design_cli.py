"""VoiceDesign's commands: ``qinyu-lit fit`` on its recipes, ``qinyu-lit voice-design``, and the agent voice
that ``generate --voice_description`` designs.

* ``qinyu-lit fit --config recipes/tiny/voice_design.yaml`` - a recipe whose model is ``VoiceDesignStage``
  runs through ``VoiceDesignCLI`` (``is_voice_design_recipe``): its own data module, no speech-LM links.
* ``qinyu-lit voice-design "a calm old man, a lighthouse keeper" --checkpoint CKPT --out voice.npy``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import yaml
from lightning.pytorch.cli import LightningCLI

from ..data.errors import QinYuError
from ..data.files import atomic_path
from ..data.voice_design import VoiceDesignDataModule
from ..model.voice_design import CONFIG_NAME, VoiceDesignConfig, VoiceDesignModel
from .voice_design import VoiceDesignStage

STAGE_NAME = VoiceDesignStage.__name__


class VoiceDesignCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # the embedding size is the data's: set once there
        parser.link_arguments("data.init_args.embedding_dim", "model.init_args.net.embedding_dim")


def is_voice_design_recipe(args: list[str]) -> bool:
    """Whether the ``--config`` files of a ``fit|validate|test`` command name ``VoiceDesignStage``."""
    configs = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    configs += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in configs:
        if os.path.isfile(path):
            doc = yaml.safe_load(Path(path).read_text()) or {}
            if str((doc.get("model") or {}).get("class_path", "")).endswith(STAGE_NAME):
                return True
    return False


def voice_design_lightning_main(args: list[str] | None = None) -> None:
    VoiceDesignCLI(VoiceDesignStage, VoiceDesignDataModule, subclass_mode_model=True, subclass_mode_data=True,
                   save_config_kwargs={"overwrite": True}, args=args)  # fmt: skip


def load_voice_design(path: str, device: str = "cpu") -> VoiceDesignModel:
    """A VoiceDesign model from a ``VoiceDesignStage`` checkpoint (``.ckpt``) or a ``save_pretrained`` directory."""
    if os.path.isdir(path):
        return VoiceDesignModel.from_pretrained(path).to(device).eval()
    if not os.path.isfile(path):
        raise QinYuError(f"--checkpoint {path}: no such VoiceDesign checkpoint (.ckpt) or directory with {CONFIG_NAME}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hp = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    cls = str(hp.get("_class_path", "")).rsplit(".", 1)[-1] or "an unknown stage"
    if cls != STAGE_NAME:
        raise QinYuError(f"--checkpoint {path}: a checkpoint of {cls}, not of {STAGE_NAME}; "
                         "train one with `qinyu-lit fit --config recipes/voice_design.yaml`")  # fmt: skip
    model = VoiceDesignModel(VoiceDesignConfig(**hp["net"]))
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()}
    keep = set(model.trainable_state())
    model.load_trained({k: v for k, v in state.items() if k in keep or not k.startswith("text_encoder.")}, path)
    return model.to(device).eval()


def design_voice(model: VoiceDesignModel, description: str, seed: int = 0, guidance: float = 1.7, steps: int = 20,
                 temperature: float = 1.0) -> np.ndarray:  # fmt: skip
    """One speaker embedding ``[D]`` float32 for ``description``."""
    vec = model.sample([description], steps=steps, guidance=guidance, temperature=temperature, seed=seed)[0]
    return vec.float().cpu().numpy()


def design_agent_voice(checkpoint: str | None, description: str, system: str = "", seed: int = 0,
                       device: str = "cpu") -> tuple[np.ndarray, str]:  # fmt: skip
    """``generate --voice_description``: the designed agent voice, and the system prompt with the description."""
    if not checkpoint:
        raise QinYuError("--voice_description needs --voice_design CKPT (a VoiceDesignStage checkpoint or directory)")
    voice = design_voice(load_voice_design(checkpoint, device), description, seed=seed)
    return voice, f"{system}\n{description}".strip()


def voice_design_cmd(
    description: str,
    checkpoint: str | None = None,
    out: str = "voice.npy",
    seed: int = 0,
    guidance: float = 1.7,
    steps: int = 20,
    temperature: float = 1.0,
    device: str = "cpu",
) -> None:
    """Design a voice: a speaker embedding (.npy) from a description of it (text-to-timbre).

    The vector is what ``generate --speaker`` takes (or use ``generate --voice_description`` to design and
    reply in one call); put it in a persona folder's ``voice/`` to give a character a designed voice.

    Args:
        description: the voice in words ("a calm old man, a lighthouse keeper, speaks slowly").
        checkpoint: a ``VoiceDesignStage`` checkpoint (``.ckpt``) or a directory of ``VoiceDesignModel.save_pretrained``.
        out: where the float32 ``[D]`` vector goes (written whole or not at all).
        seed: noise seed; the same seed and description give the same voice, another seed another voice.
        guidance: classifier-free guidance weight (release 1.7; 1.0 = none; higher follows the text more).
        steps: Euler steps (release 20).
        temperature: scale of the starting noise (release 1.0; lower = closer to the typical voice).
        device: ``cpu`` or ``cuda``.
    """
    if not description.strip():
        raise QinYuError("description: empty; describe the voice (e.g. 'a calm old man, a lighthouse keeper')")
    if not checkpoint:
        raise QinYuError("--checkpoint: give the VoiceDesign checkpoint (qinyu-lit fit --config recipes/voice_design.yaml)")
    model = load_voice_design(checkpoint, device)
    voice = design_voice(model, description, seed, guidance, steps, temperature)
    with atomic_path(out, suffix=".partial.npy") as tmp:
        np.save(tmp, voice, allow_pickle=False)
    shown = description if len(description) <= 60 else description[:57] + "..."
    print(f"wrote {out}: a {voice.shape[0]}-d speaker embedding (norm {np.linalg.norm(voice):.2f}) for {shown!r}")
