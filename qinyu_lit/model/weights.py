"""Model weights in and out without Lightning: exported directories and the stage-to-stage copy.

An exported directory (``qinyu-lit export CKPT DIR``) holds

    DIR/backbone/                 the LLM in standard Hugging Face format (``save_pretrained``; a LoRA, if
                                  any, merged in) - ``AutoModelForCausalLM.from_pretrained(DIR/backbone)``
    DIR/tokenizer/                the tokenizer with the QinYu special tokens
    DIR/qinyu_parts.safetensors   everything QinYu adds: adapter, speaker projector, codebook embeddings
                                  and heads, the (frozen) audio encoder
    DIR/qinyu_config.json         the ``QinYuConfig`` to rebuild them (paths relative to DIR)

and loads back with ``QinYuModel.from_pretrained(DIR)``. Nothing is unpickled on the way: weights are
safetensors. Lightning checkpoints (``.ckpt``) are the stages' business: ``stages/checkpoints.py``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from .config import QinYuConfig

# ``model`` below is a ``QinYuModel`` (qinyu.py imports this module, never the other way round): what is used
# of it is its ``config``, ``backbone``, ``tokenizer``, ``audio_encoder`` and ``state_dict``

CONFIG_NAME = "qinyu_config.json"
PARTS_NAME = "qinyu_parts.safetensors"


def plain_model(model: nn.Module) -> nn.Module:
    """Merge any peft wrapper (LoRA, trainable token rows) into the backbone's own weights, in place."""
    from peft import PeftModel

    if isinstance(model.backbone, PeftModel):
        model.backbone = model.backbone.merge_and_unload()
    return model


# --------------------------------------------------------------------------- exported directories


def save_exported(model: nn.Module, out_dir: str | Path) -> Path:
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


def read_exported_config(path: str | Path, dtype: str | None = None) -> QinYuConfig:
    """The ``QinYuConfig`` of an exported directory, its paths made absolute (``QinYuModel.from_pretrained``
    builds the model from it, then ``load_exported_parts``)."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_NAME}; not a directory written by `qinyu-lit export`")
    config = json.loads((path / CONFIG_NAME).read_text())
    config.update(backbone=str(path / config["backbone"]), tokenizer=str(path / config["tokenizer"]))
    if dtype is not None:
        config["dtype"] = dtype
    return QinYuConfig(**config)


def load_exported_parts(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the QinYu parts (everything but the backbone, which ``from_pretrained`` read) into ``model``."""
    path = Path(path)
    missing, unexpected = model.load_state_dict(load_file(path / PARTS_NAME), strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise ValueError(f"{path / PARTS_NAME}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


# --------------------------------------------------------------------------- init_from (stage chaining)


def _sizes(config: QinYuConfig, state: dict, model: nn.Module) -> dict:
    embed = model.backbone.get_input_embeddings().weight
    key = next(f"backbone.{n}" for n, p in model.backbone.named_parameters() if p is embed)
    return {
        "vocabulary size (tokenizer + backbone rows)": tuple(state[key].shape)[0] if key in state else None,
        "num_codebooks": config.num_codebooks,
        "codebook_size": config.codebook_size,
        "speaker_dim": config.speaker_dim,
        "heads / delay_pads / speaker_projector": (config.heads, config.delay_pads, config.speaker_projector),
    }


def copy_weights(model: nn.Module, prev: nn.Module, source: str | Path) -> None:
    """Copy all weights of ``prev`` (a previous stage's model, read from ``source``) into ``model``.

    Raises a ``ValueError`` naming the size that differs (vocabulary, codebooks, speaker dim) and the
    ``model.init_args.net`` field to change.
    """
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
