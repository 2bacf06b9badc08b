"""``qinyu-lit convert-official SRC DIR``: the released VITA-QinYu checkpoint as a qinyu-lit export.

SRC is the release's directory (``huggingface-cli download VITA-MLLM/VITA-QinYu-8B``): ``config.json``
(``model_type: qwen3_sensevoice_xy``), ``model*.safetensors`` (+ ``model.safetensors.index.json``)
and the tokenizer files. DIR is an exported directory (``model/weights.py``) that
``QinYuModel.from_pretrained``, ``init_from`` and ``recipes/persona_lora_official.yaml`` accept. The
model it describes is the release, exactly: ``token_layout: official``, ``delay_pads: positional``,
``heads: shared``, ``speaker_projector: mlp``, ``adapter_bias: false``, ``audio_encoder_type:
sense_voice``, ``loss: official``. Shards are streamed one at a time (an 8B release never sits in
memory twice) and read with safetensors only.

Every tensor goes through this table (E = ``model.audio_model.model.``, the FunASR SenseVoiceSmall;
B = id of ``<|audio_0_0|>``, R = ``codebook_size`` of config.json = K codes + C pads, C = 8;
n = number of ``E.encoder.encoders.*`` blocks, m = of ``E.encoder.tp_encoders.*``):

=====================================================  ===============================================
official name [shape]                                  qinyu-lit name [shape]
=====================================================  ===============================================
``model.embed_tokens.weight`` [V, H]                   ``backbone/model.embed_tokens.weight`` [V, H];
                                                       rows [B, B + C*R) also -> ``codebook_embed.weight``
                                                       [C*R, H] (codebook i, value v = row R*i + v)
``model.layers.L.*``, ``model.norm.weight``            ``backbone/`` same name, same shape
``lm_head.weight`` [V, H]                              ``backbone/lm_head.weight`` [V, H] (shared head:
                                                       codebook i logits = rows [B + R*i, B + R*(i+1)))
``model.audio_projection.pre_proj_layernorm.*`` [512]  ``adapter.0.*`` [512]
``model.audio_projection.mlp.0.weight`` [H, 512]       ``adapter.1.weight`` [H, 512]
``model.audio_projection.mlp.2.weight`` [H, H]         ``adapter.3.weight`` [H, H]
``model.speaker_projection.pre_proj_layernorm.*``      ``speaker_proj.0.*`` [192]
``model.speaker_projection.mlp.0.weight`` [H, 192]     ``speaker_proj.1.weight`` [H, 192]
``model.speaker_projection.mlp.2.weight`` [H, H]       ``speaker_proj.3.weight`` [H, H]
``E.embed.weight`` [16, 560]                           ``audio_encoder.query_embed.weight`` [16, 560]
``E.encoder.encoders0.0.X``                            ``audio_encoder.layers.0.X'``
``E.encoder.encoders.i.X``                             ``audio_encoder.layers.{i+1}.X'``
``E.encoder.after_norm.*`` [512]                       ``audio_encoder.layers.{n}.final_layernorm.*``
``E.encoder.tp_encoders.j.X``                          ``audio_encoder.layers.{n+1+j}.X'``
``E.encoder.tp_norm.*`` [512]                          ``audio_encoder.layers.{n+m}.final_layernorm.*``
``E.ctc.ctc_lo.*`` [25055, 512]                        dropped: the CTC head is unused by VITA-QinYu
=====================================================  ===============================================

with X -> X' inside a block: ``self_attn.linear_q_k_v.{weight,bias}`` [3d, in] -> ``self_attn.{q,k,v}_proj``
(rows [0, d), [d, 2d), [2d, 3d)); ``self_attn.linear_out`` -> ``self_attn.o_proj``;
``self_attn.fsmn_block.weight`` [d, 1, k] -> ``self_attn.fsmn.conv.weight``; ``feed_forward.w_1 / w_2`` ->
``mlp.fc1 / fc2``; ``norm1 / norm2`` -> ``input_layernorm / post_attention_layernorm``.

Anything else (``audio_heads.*`` of ``use_audio_heads``, ``mtp_*`` of MTP layers, an unknown name) stops
the conversion with an error naming the tensor: nothing is dropped silently. If the release's shards do
not hold the encoder, ``--sense_voice`` names SenseVoiceSmall's own weights (FunASR ``model.pt`` or a
``.safetensors`` with the same names, without the ``E`` prefix).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..data.tokenizer import load_tokenizer, special_ids
from .config import QinYuConfig
from .weights import CONFIG_NAME, PARTS_NAME

ENC = "model.audio_model.model."
BACKBONE_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "rope_theta", "rope_scaling",
    "max_position_embeddings", "attention_bias", "attention_dropout", "tie_word_embeddings", "initializer_range",
    "bos_token_id", "eos_token_id", "use_sliding_window", "sliding_window", "max_window_layers",
)  # fmt: skip
PROJECTORS = {"model.audio_projection.": "adapter.", "model.speaker_projection.": "speaker_proj."}
PROJECTOR_PARTS = {"pre_proj_layernorm.weight": "0.weight", "pre_proj_layernorm.bias": "0.bias",
                   "mlp.0.weight": "1.weight", "mlp.2.weight": "3.weight"}  # fmt: skip
BLOCK_PARTS = {"self_attn.linear_out.": "self_attn.o_proj.", "self_attn.fsmn_block.": "self_attn.fsmn.conv.",
               "feed_forward.w_1.": "mlp.fc1.", "feed_forward.w_2.": "mlp.fc2.", "norm1.": "input_layernorm.",
               "norm2.": "post_attention_layernorm."}  # fmt: skip
BLOCK = re.compile(r"encoder\.(encoders0|encoders|tp_encoders)\.(\d+)\.(.+)")


class OfficialLayout:
    """What the conversion needs to know of one release: sizes, the audio id base, the block counts."""

    def __init__(self, config: dict, names: list[str], audio_base: int, source: Path):
        self.source, self.audio_base = source, audio_base
        self.num_codebooks = int(config["num_codebook"])
        self.rows = int(config["codebook_size"])  # K codes + C pads (1032)
        self.main = _count(names, "encoder.encoders.")
        self.tp = _count(names, "encoder.tp_encoders.")

    def encoder_name(self, name: str) -> str:
        """A SenseVoice name (without ``E``) -> its ``audio_encoder.`` name (the rename table)."""
        if name == "embed.weight":
            return "audio_encoder.query_embed.weight"
        for norm, layer in (("encoder.after_norm.", self.main), ("encoder.tp_norm.", self.main + self.tp)):
            if name.startswith(norm):
                return f"audio_encoder.layers.{layer}.final_layernorm.{name[len(norm) :]}"
        match = BLOCK.fullmatch(name)
        if not match:
            raise self.unmapped(ENC + name)
        group, index, rest = match.group(1), int(match.group(2)), match.group(3)
        layer = {"encoders0": index, "encoders": 1 + index, "tp_encoders": 1 + self.main + index}[group]
        for old, new in BLOCK_PARTS.items():
            if rest.startswith(old):
                return f"audio_encoder.layers.{layer}.{new}{rest[len(old) :]}"
        if rest.startswith("self_attn.linear_q_k_v."):
            return f"audio_encoder.layers.{layer}.{rest}"  # split by map_tensor
        raise self.unmapped(ENC + name)

    def unmapped(self, name: str) -> ValueError:
        return ValueError(
            f"{self.source}: tensor {name} has no entry in the official -> qinyu-lit table (qinyu_lit/model/"
            "official.py); use_audio_heads and MTP layers are not supported"
        )

    def map_tensor(self, name: str, tensor: torch.Tensor) -> tuple[dict, dict]:
        """One official tensor -> ({backbone name: tensor}, {qinyu part name: tensor})."""
        if name == "model.embed_tokens.weight":
            audio = tensor[self.audio_base : self.audio_base + self.num_codebooks * self.rows]
            return {name: tensor}, {"codebook_embed.weight": audio.clone()}
        if name.startswith(("model.layers.", "model.norm.")) or name == "lm_head.weight":
            return {name: tensor}, {}
        for prefix, ours in PROJECTORS.items():
            if name.startswith(prefix) and name[len(prefix) :] in PROJECTOR_PARTS:
                return {}, {ours + PROJECTOR_PARTS[name[len(prefix) :]]: tensor}
        if name.startswith(ENC + "ctc."):
            return {}, {}  # the CTC head: unused by VITA-QinYu
        if not name.startswith(ENC):
            raise self.unmapped(name)
        ours = self.encoder_name(name[len(ENC) :])
        if ".linear_q_k_v." in ours:
            q, k, v = tensor.chunk(3, dim=0)
            kind = ours.rsplit(".", 1)[1]
            stem = ours.split(".self_attn.")[0] + ".self_attn."
            return {}, {f"{stem}{p}_proj.{kind}": t.clone() for p, t in zip("qkv", (q, k, v), strict=True)}
        return {}, {ours: tensor}


def _count(names: list[str], prefix: str) -> int:
    found = {int(n[len(ENC + prefix) :].split(".")[0]) for n in names if n.startswith(ENC + prefix)}
    return max(found) + 1 if found else 0


def _shards(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        return [src / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    single = sorted(src.glob("*.safetensors"))
    if not single:
        raise FileNotFoundError(f"{src}: no model.safetensors.index.json and no *.safetensors shards")
    return single


def _read_config(src: Path) -> dict:
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: no config.json; pass the release's checkpoint directory")
    config = json.loads((src / "config.json").read_text())
    if config.get("model_type") != "qwen3_sensevoice_xy":
        raise ValueError(
            f"{src}/config.json: model_type {config.get('model_type')!r}, expected qwen3_sensevoice_xy"
        )
    for flag, why in (
        ("use_audio_heads", "separate audio heads"),
        ("num_nextn_predict_layers", "MTP layers"),
    ):
        if config.get(flag):
            raise ValueError(f"{src}/config.json: {flag} = {config[flag]} ({why}) is not supported")
    return config


def _sense_voice_file(path: Path) -> dict[str, torch.Tensor]:
    """SenseVoiceSmall's own weights (FunASR ``model.pt``: a plain state dict, loaded weights-only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    return {ENC + k.removeprefix(ENC): v for k, v in state.items()}


def _encoder_config(parts: dict, heads: int) -> dict:
    """The FunAsrNanoEncoder config the renamed SenseVoice tensors fit (sizes read off the shapes)."""
    layers = {int(k.split(".")[2]) for k in parts if k.startswith("audio_encoder.layers.")}
    norms = sorted(int(k.split(".")[2]) for k in parts if k.endswith("final_layernorm.weight"))
    width = int(parts["audio_encoder.query_embed.weight"].shape[1])
    stacked = 7 if width % 7 == 0 else 1  # SenseVoice: LFR of 7 stacked 80-bin frames = 560
    return dict(
        num_mel_bins=width // stacked, num_stacked_frames=stacked,
        hidden_size=int(parts["audio_encoder.layers.0.self_attn.o_proj.weight"].shape[0]),
        intermediate_size=int(parts["audio_encoder.layers.0.mlp.fc1.weight"].shape[0]),
        num_attention_heads=heads, num_hidden_layers=len(layers),
        num_timestamp_prediction_layers=len(layers) - 1 - norms[0],
        fsmn_kernel_size=int(parts["audio_encoder.layers.0.self_attn.fsmn.conv.weight"].shape[-1]),
        max_position_embeddings=8192,  # sinusoidal, no weights: room for the release's 5-minute limit
    )  # fmt: skip


def _backbone_config(config: dict, out: Path) -> None:
    from transformers import Qwen3Config

    fields = {k: config[k] for k in BACKBONE_FIELDS if config.get(k) is not None}
    Qwen3Config(
        **fields, architectures=["Qwen3ForCausalLM"], dtype=config.get("torch_dtype")
    ).save_pretrained(out)


def convert_official(src: str | Path, out_dir: str | Path, sense_voice: str | None = None,
                     encoder_heads: int = 4) -> Path:  # fmt: skip
    """Convert the release in ``src`` to an exported directory ``out_dir`` (see the module docstring)."""
    src, out = Path(src), Path(out_dir)
    config = _read_config(src)
    tok = load_tokenizer(str(src), "official")  # every release token must be there
    audio_base = special_ids(tok, "official").audio_base
    shards = _shards(src)
    names = [n for s in shards for n in safe_open(str(s), "pt").keys()]
    extra = _sense_voice_file(Path(sense_voice)) if sense_voice else {}
    layout = OfficialLayout(config, names + list(extra), audio_base, src)
    _check_ids(tok, layout, src)
    (out / "backbone").mkdir(parents=True, exist_ok=True)
    parts, weight_map = {}, {}
    for number, shard in enumerate(shards, 1):
        backbone = {}
        with safe_open(str(shard), "pt") as f:
            for name in f.keys():
                mine, theirs = layout.map_tensor(name, f.get_tensor(name))
                backbone.update(mine)
                parts.update(theirs)
        file = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        )
        save_file(
            {k: v.contiguous() for k, v in backbone.items()},
            out / "backbone" / file,
            metadata={"format": "pt"},
        )
        weight_map.update(dict.fromkeys(backbone, file))
    for name, tensor in extra.items():
        parts.update(layout.map_tensor(name, tensor)[1])
    _check_complete(weight_map, parts, src, config)
    if len(shards) > 1:
        index = {"metadata": {}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "backbone" / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    _backbone_config(config, out / "backbone")
    tok.save_pretrained(out / "tokenizer")
    save_file({k: v.contiguous() for k, v in parts.items()}, out / PARTS_NAME, metadata={"format": "pt"})
    net = official_net(config, _encoder_config(parts, encoder_heads), layout)
    (out / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(net), indent=2) + "\n")
    return out


def official_net(config: dict, encoder: dict, layout: OfficialLayout) -> QinYuConfig:
    """The ``QinYuConfig`` that is the release (paths relative to the exported directory)."""
    speaker_dim = int(config.get("speaker_embedding_size", 192))
    return QinYuConfig(
        backbone="backbone", tokenizer="tokenizer", audio_encoder=encoder, audio_encoder_type="sense_voice",
        num_codebooks=layout.num_codebooks, codebook_size=layout.rows - layout.num_codebooks,
        speaker_dim=speaker_dim, dtype=config.get("torch_dtype"), token_layout="official", delay_pads="positional",
        heads="shared", speaker_projector="mlp", adapter_bias=False, loss="official",
    )  # fmt: skip


def _check_ids(tok, layout: OfficialLayout, src: Path) -> None:
    """The audio ids must be where the table expects them: codebook i, value v at B + R*i + v."""
    from ..data.tokenizer import official_audio_token

    codes = layout.rows - layout.num_codebooks
    for i, v in ((1, 0), (layout.num_codebooks - 1, layout.rows - 1)):
        token = official_audio_token(i, v, codes)
        if tok.convert_tokens_to_ids(token) != layout.audio_base + layout.rows * i + v:
            raise ValueError(f"{src}: tokenizer id of {token} is not <|audio_0_0|> + {layout.rows * i + v}")


def _check_complete(weight_map: dict, parts: dict, src: Path, config: dict) -> None:
    needed = ["model.embed_tokens.weight", "model.norm.weight"]
    needed += [] if config.get("tie_word_embeddings") else ["lm_head.weight"]
    missing = [n for n in needed if n not in weight_map]
    missing += [n for n in ("adapter.1.weight", "speaker_proj.1.weight", "audio_encoder.query_embed.weight")
                if n not in parts]  # fmt: skip
    if missing:
        hint = " (the SenseVoice encoder: pass --sense_voice SenseVoiceSmall/model.pt)" if any(
            m.startswith("audio_encoder") for m in missing) else ""  # fmt: skip
        raise ValueError(f"{src}: the checkpoint lacks {missing}{hint}")


def convert_official_cmd(
    src: str, out_dir: str, sense_voice: str | None = None, encoder_heads: int = 4
) -> None:
    """Convert the released VITA-QinYu checkpoint directory SRC into a qinyu-lit export DIR.

    Args:
        src: the release's directory (config.json, safetensors shards + index, tokenizer files).
        out_dir: where the exported directory goes (``QinYuModel.from_pretrained``, ``init_from``).
        sense_voice: SenseVoiceSmall's own ``model.pt`` / ``.safetensors``, if the release's shards lack the encoder.
        encoder_heads: attention heads of the SenseVoice encoder (not visible in the shapes; SenseVoiceSmall: 4).
    """
    path = convert_official(src, out_dir, sense_voice=sense_voice, encoder_heads=encoder_heads)
    print(
        f"[qinyu-lit] converted {src} -> {path} (token_layout official; load with QinYuModel.from_pretrained)"
    )
