"""The released VoiceDesign weights (VITA-QinYu ``VoiceDesign/``) as a ``VoiceDesignModel`` directory.

``qinyu-lit convert-voice-design flow.pt OUT --text_encoder Qwen/Qwen3-Embedding-0.6B`` reads the release's
state dict (a ``.pt`` of ``Text2SpeakerEmbeddingFlow``, possibly under ``state_dict``/``model`` and with
DeepSpeed's ``module.`` prefix), renames every tensor by the table below, and writes
``VoiceDesignModel.save_pretrained(OUT)`` with ``official_text: true`` (the release's description
normaliser). A tensor no row maps stops the conversion with its name; so does one of ours left unset.

    release (prefix decoder.)                                  qinyu-lit                                 change
    text_encoder.projection.{weight,bias}                      text_proj.*
    text_encoder.text_encoder.*                                text_encoder.*  (frozen Qwen3 weights)
    estimator.time_mlp.layer.{0,2}.*                           estimator.time_mlp.{0,2}.*
    estimator.blocks.i.time_fusion.film.{weight,bias}          estimator.layers.i.time_film.*            Conv1d k=1 -> Linear
    estimator.blocks.i.conv{1,2,3}.dwconv.*                    estimator.layers.i.convnext.{0,1,2}.depthwise.*
    estimator.blocks.i.conv{1,2,3}.norm.saln.*                 estimator.layers.i.convnext.{0,1,2}.norm.to_gain_bias.*
    estimator.blocks.i.conv{1,2,3}.pwconv.{0,2}.*              estimator.layers.i.convnext.{0,1,2}.{up,down}.*
    estimator.blocks.i.block.attn.{qkv,proj}.*                 estimator.layers.i.dit.{qkv,attn_out}.*
    estimator.blocks.i.block.mlp.conv_{1,2}.*                  estimator.layers.i.dit.{ffn_in,ffn_out}.*
    estimator.blocks.i.block.adaLN_modulation.{0,2}.*          estimator.layers.i.dit.{cond_in,modulation}.*
    estimator.final_proj.{weight,bias}                         estimator.head.*                          Conv1d k=1 -> Linear

Sizes come from the tensors (embedding size, filter size, layers); the head count is not in them
(release: 4, ``--num_heads``).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from ..data.errors import QinYuError

# (release key pattern after "decoder.", our key template, squeeze the k=1 conv axis)
TENSOR_TABLE: tuple[tuple[str, str, bool], ...] = (
    (r"text_encoder\.projection\.(weight|bias)", r"text_proj.\1", False),
    (r"text_encoder\.text_encoder\.(.+)", r"text_encoder.\1", False),
    (r"estimator\.time_mlp\.layer\.([02])\.(weight|bias)", r"estimator.time_mlp.\1.\2", False),
    (r"estimator\.blocks\.(\d+)\.time_fusion\.film\.(weight|bias)", r"estimator.layers.\1.time_film.\2", True),
    (r"estimator\.blocks\.(\d+)\.conv([123])\.dwconv\.(weight|bias)", r"estimator.layers.\1.convnext.{c}.depthwise.\3", False),
    (r"estimator\.blocks\.(\d+)\.conv([123])\.norm\.saln\.(weight|bias)", r"estimator.layers.\1.convnext.{c}.norm.to_gain_bias.\3", False),
    (r"estimator\.blocks\.(\d+)\.conv([123])\.pwconv\.0\.(weight|bias)", r"estimator.layers.\1.convnext.{c}.up.\3", False),
    (r"estimator\.blocks\.(\d+)\.conv([123])\.pwconv\.2\.(weight|bias)", r"estimator.layers.\1.convnext.{c}.down.\3", False),
    (r"estimator\.blocks\.(\d+)\.block\.attn\.qkv\.(weight|bias)", r"estimator.layers.\1.dit.qkv.\2", False),
    (r"estimator\.blocks\.(\d+)\.block\.attn\.proj\.(weight|bias)", r"estimator.layers.\1.dit.attn_out.\2", False),
    (r"estimator\.blocks\.(\d+)\.block\.mlp\.conv_1\.(weight|bias)", r"estimator.layers.\1.dit.ffn_in.\2", False),
    (r"estimator\.blocks\.(\d+)\.block\.mlp\.conv_2\.(weight|bias)", r"estimator.layers.\1.dit.ffn_out.\2", False),
    (r"estimator\.blocks\.(\d+)\.block\.adaLN_modulation\.0\.(weight|bias)", r"estimator.layers.\1.dit.cond_in.\2", False),
    (r"estimator\.blocks\.(\d+)\.block\.adaLN_modulation\.2\.(weight|bias)", r"estimator.layers.\1.dit.modulation.\2", False),
    (r"estimator\.final_proj\.(weight|bias)", r"estimator.head.\1", True),
)  # fmt: skip


def release_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The release's tensors from a ``.pt`` file (no pickled classes: ``weights_only``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise QinYuError(f"{path}: no such file (the release's VoiceDesign .pt)") from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return {k.removeprefix("module."): v for k, v in state.items()}


def convert_state(release: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and reshape by ``TENSOR_TABLE``; an unmapped release tensor raises with its name."""
    ours = {}
    for key, tensor in release.items():
        short = key.removeprefix("decoder.")
        for pattern, template, squeeze in TENSOR_TABLE:
            m = re.fullmatch(pattern, short)
            if m is None:
                continue
            name = m.expand(template)
            if "{c}" in name:  # conv1..3 -> convnext.0..2
                name = name.format(c=int(m.group(2)) - 1)
            ours[name] = tensor.squeeze(-1) if squeeze and tensor.ndim == 3 else tensor
            break
        else:
            raise QinYuError(f"release tensor {key!r} {list(tensor.shape)}: no row of the VoiceDesign tensor table maps it")
    return ours


def release_sizes(state: dict[str, torch.Tensor]) -> dict:
    """``VoiceDesignConfig`` sizes read from the converted tensors."""
    try:
        dim = state["estimator.head.weight"].shape[0]
        filter_size = state["estimator.time_mlp.0.weight"].shape[0]
    except KeyError as e:
        raise QinYuError(f"release state dict lacks {e.args[0]} (converted name): not a VoiceDesign checkpoint") from None
    layers = len({k.split(".")[2] for k in state if k.startswith("estimator.layers.")})
    return dict(embedding_dim=dim, filter_size=filter_size, num_layers=layers)


def convert_voice_design(src: str | Path, out_dir: str | Path, text_encoder: str | dict, tokenizer: str | None = None,
                         num_heads: int = 4):  # fmt: skip
    """Convert, load strictly into a ``VoiceDesignModel`` and save it; returns the model."""
    from .voice_design import VoiceDesignConfig, VoiceDesignModel

    state = convert_state(release_state(src))
    config = VoiceDesignConfig(text_encoder=text_encoder, tokenizer=tokenizer, num_heads=num_heads, official_text=True,
                               **release_sizes(state))  # fmt: skip
    model = VoiceDesignModel(config)
    encoder = {k.removeprefix("text_encoder."): v for k, v in state.items() if k.startswith("text_encoder.")}
    if encoder:  # the release may carry its frozen encoder: it must be exactly the named one's architecture
        missing, unexpected = model.text_encoder.load_state_dict(encoder, strict=False)
        if missing or unexpected:
            raise QinYuError(f"release text encoder does not fit {text_encoder}: missing {missing[:2]}, unexpected {unexpected[:2]}")
    # the estimator and projection from the release; the encoder entries (saved for a random one) as loaded above
    trained = {k: v for k, v in state.items() if not k.startswith("text_encoder.")}
    trained |= {k: v for k, v in model.trainable_state().items() if k.startswith("text_encoder.")}
    model.load_trained(trained, str(src))
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # whole or not at all
    return model


def convert_voice_design_cmd(src: str, out_dir: str, text_encoder: str | dict = "Qwen/Qwen3-Embedding-0.6B",
                             tokenizer: str | None = None, num_heads: int = 4) -> None:  # fmt: skip
    """The released VoiceDesign weights (.pt) -> a directory ``qinyu-lit voice-design --checkpoint`` takes.

    Args:
        src: the release's flow checkpoint (``.pt``; a DeepSpeed ZeRO folder must be merged with zero_to_fp32 first).
        out_dir: where the converted directory goes (written whole or not at all).
        text_encoder: the frozen text encoder the release used (``Qwen/Qwen3-Embedding-0.6B``): name, directory or config dict.
        tokenizer: its tokenizer; ``None``: the ``text_encoder`` name.
        num_heads: the estimator's attention heads (not visible in the tensors; release 4).
    """
    model = convert_voice_design(src, out_dir, text_encoder, tokenizer, num_heads)
    n = sum(v.numel() for v in model.trainable_state().values())
    print(f"converted {src} -> {out_dir}: {n:,} parameters, embedding size {model.config.embedding_dim}")
