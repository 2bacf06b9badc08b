"""Lightning checkpoints: rebuild the stage a ``.ckpt`` was written by, chain stages, export.

``stage_from_checkpoint`` reads a checkpoint with ``weights_only=True`` (nothing is unpickled) and
rebuilds its stage class, LoRA included; ``load_init`` is ``init_from``; ``export_cmd`` is
``qinyu-lit export`` (a ``from_pretrained`` directory, or a persona's PEFT adapter).
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import lightning as L
import torch

from ..data.files import CARD_NAME
from ..model.config import QinYuConfig
from ..model.qinyu import QinYuModel
from ..model.weights import CONFIG_NAME, PARTS_NAME, copy_weights, plain_model, save_exported

DEFAULT_STAGE = "qinyu_lit.stages.base.QinYuStage"


def _stage_class(class_path: str):
    # only this package's classes are imported by name: a checkpoint should not pick code to run
    if not class_path.startswith("qinyu_lit."):
        print(f"[qinyu-lit] checkpoint names stage {class_path!r}; rebuilding it as {DEFAULT_STAGE}")
        class_path = DEFAULT_STAGE
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    # a QinYu stage (stages/base.py imports this module, so the check is by kind, not by class)
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule) and hasattr(cls, "TRAINABLE")):
        raise ValueError(f"{class_path} is not a QinYuStage")
    return cls


def _net_config(net) -> QinYuConfig:
    return net if isinstance(net, QinYuConfig) else QinYuConfig(**dict(net))


def stage_from_checkpoint(path: str | Path, map_location: str = "cpu"):
    """Rebuild the stage a Lightning checkpoint was written by (its class, LoRA included) and load it.

    The optimizer and ``init_from`` of the run are not rebuilt: the weights come from the checkpoint.
    """
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    hp = dict(ckpt.get("hyper_parameters") or {})
    if "net" not in hp:
        raise ValueError(f"{path}: not a qinyu-lit checkpoint (no hyper_parameters.net)")
    cls = _stage_class(hp.get("_class_path", DEFAULT_STAGE))
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {
        k: v
        for k, v in hp.items()
        if k in accepted and k not in ("self", "net", "optimizer", "init_from", "persona_card")
    }
    stage = cls(net=_net_config(hp["net"]), **kwargs)
    stage.configure_model()
    stage.load_state_dict(ckpt["state_dict"])
    if "qinyu_persona" in ckpt:
        stage.persona_card = ckpt["qinyu_persona"]
    return stage.eval()


def load_init(model: QinYuModel, source: str | Path) -> None:
    """``init_from``: the weights of a previous stage (checkpoint file or exported directory) into ``model``.
    Costs one extra copy of the model in CPU memory while loading."""
    source = Path(source)
    if source.is_dir():
        prev = QinYuModel.from_pretrained(source, dtype=model.config.dtype)
    elif source.is_file():
        prev = plain_model(stage_from_checkpoint(source).model)
    else:
        raise FileNotFoundError(f"init_from: {source} is neither a checkpoint file nor an exported directory")
    copy_weights(model, prev, source)


def save_adapter(stage, out_dir: str | Path) -> Path:
    """A persona stage -> a PEFT adapter directory (+ ``persona.json``, + trained QinYu parts if any).

    ``peft.PeftModel.from_pretrained(backbone, out_dir)`` loads it on the exported base backbone.
    """
    from peft import PeftModel
    from safetensors.torch import save_file

    if not isinstance(stage.model.backbone, PeftModel):
        raise ValueError(
            f"{type(stage).__name__} has no LoRA adapter; --adapter_only is for PersonaStage checkpoints"
        )
    out = Path(out_dir)
    stage.model.backbone.save_pretrained(out)
    parts = {
        n: p.detach().contiguous()
        for n, p in stage.model.named_parameters()
        if p.requires_grad and not n.startswith("backbone.")
    }
    if parts:
        save_file(parts, out / PARTS_NAME, metadata={"format": "pt"})
    if getattr(stage, "persona_card", None):
        (out / CARD_NAME).write_text(json.dumps(stage.persona_card, indent=2) + "\n")
    return out


def export_cmd(ckpt: str, out_dir: str, adapter_only: bool = False) -> None:
    """Export a checkpoint: a directory that ``QinYuModel.from_pretrained`` loads (LoRA merged).

    Args:
        ckpt: a Lightning checkpoint written by ``qinyu-lit fit`` (any stage).
        out_dir: the directory to write (backbone/, tokenizer/, qinyu_parts.safetensors, qinyu_config.json).
        adapter_only: for a persona checkpoint, write only its PEFT adapter directory (plus the persona
            card and any trained QinYu parts) instead of a merged full model.
    """
    stage = stage_from_checkpoint(ckpt)
    if adapter_only:
        path = save_adapter(stage, out_dir)
        print(
            f"persona adapter written to {path} (load it with peft.PeftModel.from_pretrained or qinyu_lit.persona_bank.PersonaBank)"
        )
        return
    path = save_exported(stage.model, out_dir)
    print(f"exported to {path}: backbone/ (Hugging Face format), tokenizer/, {PARTS_NAME}, {CONFIG_NAME}")
