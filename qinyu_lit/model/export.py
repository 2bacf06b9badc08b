"""Checkpoints in and out: rebuild a stage, export a model directory, load weights for the next stage.

An exported directory (``qinyu-lit export CKPT DIR``) holds

    DIR/backbone/                 the LLM in standard Hugging Face format (``save_pretrained``; a LoRA, if
                                  any, merged in) - ``AutoModelForCausalLM.from_pretrained(DIR/backbone)``
    DIR/tokenizer/                the tokenizer with the QinYu special tokens
    DIR/qinyu_parts.safetensors   everything QinYu adds: adapter, speaker projector, codebook embeddings
                                  and heads, the (frozen) audio encoder
    DIR/qinyu_config.json         the ``QinYuConfig`` to rebuild them (paths relative to DIR)

and loads back with ``QinYuModel.from_pretrained(DIR)`` (same as ``load_exported``). Nothing is
unpickled on the way: checkpoints are read with ``weights_only=True``, weights are safetensors.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .qinyu import QinYuConfig, QinYuModel

CONFIG_NAME = "qinyu_config.json"
PARTS_NAME = "qinyu_parts.safetensors"
DEFAULT_STAGE = "qinyu_lit.stages.base.QinYuStage"


# --------------------------------------------------------------------------- Lightning checkpoints


def _stage_class(class_path: str):
    from ..stages.base import QinYuStage

    # only this package's classes are imported by name: a checkpoint should not pick code to run
    if not class_path.startswith("qinyu_lit."):
        print(f"[qinyu-lit] checkpoint names stage {class_path!r}; rebuilding it as {DEFAULT_STAGE}")
        class_path = DEFAULT_STAGE
    module, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, QinYuStage)):
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


def plain_model(model: QinYuModel) -> QinYuModel:
    """Merge any peft wrapper (LoRA, trainable token rows) into the backbone's own weights, in place."""
    from peft import PeftModel

    if isinstance(model.backbone, PeftModel):
        model.backbone = model.backbone.merge_and_unload()
    return model


# --------------------------------------------------------------------------- exported directories


def save_exported(model: QinYuModel, out_dir: str | Path) -> Path:
    """Write ``model`` (LoRA merged) as an exported directory; see the module docstring."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = plain_model(model)
    model.backbone.save_pretrained(out / "backbone")
    model.tokenizer.save_pretrained(out / "tokenizer")
    parts = {
        k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith("backbone.")
    }
    save_file(parts, out / PARTS_NAME, metadata={"format": "pt"})
    config = dataclasses.asdict(model.config)
    config.update(backbone="backbone", tokenizer="tokenizer")
    if isinstance(config["audio_encoder"], str):
        # its weights are in the parts file; its architecture must not need a download to rebuild
        config["audio_encoder"] = model.audio_encoder.config.to_dict()
    (out / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return out


def load_exported(path: str | Path, dtype: str | None = None) -> QinYuModel:
    """Rebuild a ``QinYuModel`` from an exported directory."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; not a directory written by `qinyu-lit export`")
    config = json.loads((path / CONFIG_NAME).read_text())
    config.update(backbone=str(path / config["backbone"]), tokenizer=str(path / config["tokenizer"]))
    if dtype is not None:
        config["dtype"] = dtype
    model = QinYuModel(QinYuConfig(**config))
    missing, unexpected = model.load_state_dict(load_file(path / PARTS_NAME), strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise ValueError(f"{path / PARTS_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


# --------------------------------------------------------------------------- init_from (stage chaining)


def _sizes(config: QinYuConfig, state: dict, model: QinYuModel) -> dict:
    embed = model.backbone.get_input_embeddings().weight
    key = next(f"backbone.{n}" for n, p in model.backbone.named_parameters() if p is embed)
    return {
        "vocabulary size (tokenizer + backbone rows)": tuple(state[key].shape)[0] if key in state else None,
        "num_codebooks": config.num_codebooks,
        "codebook_size": config.codebook_size,
        "speaker_dim": config.speaker_dim,
    }


def load_weights(model: QinYuModel, source: str | Path) -> None:
    """Copy all weights of a previous stage (checkpoint file or exported directory) into ``model``.

    Raises a ``ValueError`` naming the size that differs (vocabulary, codebooks, speaker dim) and the
    ``model.init_args.net`` field to change. Costs one extra copy of the model in CPU memory while loading.
    """
    source = Path(source)
    if source.is_dir():
        prev = load_exported(source, dtype=model.config.dtype)
    elif source.is_file():
        prev = plain_model(stage_from_checkpoint(source).model)
    else:
        raise FileNotFoundError(f"init_from: {source} is neither a checkpoint file nor an exported directory")
    state = prev.state_dict()
    mine, theirs = _sizes(model.config, model.state_dict(), model), _sizes(prev.config, state, model)
    for what in mine:
        if mine[what] != theirs[what]:
            raise ValueError(
                f"init_from {source}: {what} is {theirs[what]} there but {mine[what]} in this stage's "
                f"model.init_args.net; use the same tokenizer, codec and speaker encoder along the chain"
            )
    target = model.state_dict()
    for key, value in state.items():
        if key in target and target[key].shape != value.shape:
            raise ValueError(
                f"init_from {source}: {key} has shape {tuple(value.shape)} there, {tuple(target[key].shape)} here"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"init_from {source}: parameters missing {missing[:5]}, unexpected {unexpected[:5]}")
    print(f"[qinyu-lit] initialised {len(state)} tensors from {source}")


# --------------------------------------------------------------------------- command


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
        from ..persona import save_adapter

        path = save_adapter(stage, out_dir)
        print(
            f"persona adapter written to {path} (load it with peft.PeftModel.from_pretrained or qinyu_lit.persona.PersonaBank)"
        )
        return
    path = save_exported(stage.model, out_dir)
    print(f"exported to {path}: backbone/ (Hugging Face format), tokenizer/, {PARTS_NAME}, {CONFIG_NAME}")
