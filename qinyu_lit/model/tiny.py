"""Tiny QinYu models from the registry of tiny configs (``qinyu_lit/tiny_configs.py``): the demo-sized
``QinYuConfig`` and a tiny checkpoint in the released VITA-QinYu's layout (``write_tiny_release``)."""

from __future__ import annotations

from ..tiny_configs import TINY_FUN_ASR_NANO, tiny_backbone
from .config import QinYuConfig


def tiny_config(tokenizer: str, hidden_size: int = 64, num_layers: int = 2, audio_encoder: bool = True) -> QinYuConfig:
    """QinYu on a tiny random Qwen3 (+ tiny FunAsrNano encoder), 8 x 64 codes, 16-d speakers:
    the sizes of the demo corpus (``qinyu-lit demo-data``)."""
    return QinYuConfig(
        backbone=tiny_backbone(hidden_size, num_layers),
        tokenizer=str(tokenizer),
        audio_encoder=dict(TINY_FUN_ASR_NANO) if audio_encoder else None,
        num_codebooks=8,
        codebook_size=64,
        speaker_dim=16,
    )


# --------------------------------------------------------------------------- a tiny release (official layout)

# config.json of a tiny VITA-QinYu: the release's fields (official_spec §1.2), toy sizes
TINY_RELEASE = dict(
    architectures=["Qwen3MTPSenseVoiceForCausalLM"], model_type="qwen3_sensevoice_xy", hidden_size=64,
    intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    rms_norm_eps=1e-6, rope_theta=1_000_000, rope_scaling=None, max_position_embeddings=4096, attention_bias=False,
    tie_word_embeddings=False, num_codebook=8, use_audio_heads=False, num_nextn_predict_layers=0,
    mtp_loss_weight=1.0, audio_projection_norm_type="layer_norm", use_speaker_embedding=True,
    speaker_embedding_size=16, torch_dtype="bfloat16", use_cache=False,
    # the release ships its model code and points at it: loading the folder with Auto* classes asks
    # "run the custom code? [y/N]" unless told not to (convert-official never runs it)
    auto_map={"AutoConfig": "configuration_qwen3.Qwen3SenseVoiceConfig",
              "AutoModelForCausalLM": "modeling_qwen3.Qwen3MTPSenseVoiceForCausalLM"},
)  # fmt: skip
# SenseVoiceSmall's shapes at toy sizes: LFR input 8 mels x 7, width 32, FFN 64, kernel 11
TINY_SENSE_VOICE = dict(input=56, width=32, ffn=64, kernel=11, main_blocks=2, tp_blocks=1, ctc_vocab=30)


def _sense_voice_tensors(g, s: dict) -> dict:
    """FunASR SenseVoiceSmall names (``model.audio_model.model.`` + ...) with random values."""
    w, blocks = s["width"], [("encoders0.0", s["input"])]
    blocks += [(f"encoders.{i}", w) for i in range(s["main_blocks"] - 1)]
    blocks += [(f"tp_encoders.{i}", w) for i in range(s["tp_blocks"])]
    t = {"embed.weight": (16, s["input"]), "ctc.ctc_lo.weight": (s["ctc_vocab"], w), "ctc.ctc_lo.bias": (s["ctc_vocab"],)}
    for name, width_in in blocks:
        p = f"encoder.{name}."
        t.update({p + "self_attn.linear_q_k_v.weight": (3 * w, width_in), p + "self_attn.linear_q_k_v.bias": (3 * w,),
                  p + "self_attn.linear_out.weight": (w, w), p + "self_attn.linear_out.bias": (w,),
                  p + "self_attn.fsmn_block.weight": (w, 1, s["kernel"]),
                  p + "feed_forward.w_1.weight": (s["ffn"], w), p + "feed_forward.w_1.bias": (s["ffn"],),
                  p + "feed_forward.w_2.weight": (w, s["ffn"]), p + "feed_forward.w_2.bias": (w,),
                  p + "norm1.weight": (width_in,), p + "norm1.bias": (width_in,),
                  p + "norm2.weight": (w,), p + "norm2.bias": (w,)})  # fmt: skip
    for norm in ("after_norm", "tp_norm"):
        t.update({f"encoder.{norm}.weight": (w,), f"encoder.{norm}.bias": (w,)})
    return {f"model.audio_model.model.{k}": _random(g, shape, k) for k, shape in t.items()}


def _random(g, shape, name: str):
    import torch

    scale = 0.2 if "embed" in name or name.endswith("bias") else shape[-1] ** -0.5
    base = 1.0 if "norm" in name and name.endswith("weight") else 0.0  # norms near 1, but not exactly
    return (base + scale * torch.randn(shape, generator=g)).to(torch.bfloat16)


def write_tiny_release(out_dir, codebook_size: int = 64, seed: int = 0):
    """A tiny random checkpoint in the released VITA-QinYu's layout: its config.json fields, tensor names,
    shapes and dtype (bf16), two safetensors shards + index, and a tokenizer with its added-token order
    (``official_demo_tokenizer``). ``qinyu-lit convert-official`` takes it like the 8B release."""
    import json
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from ..data.tokenizer import official_demo_tokenizer

    out = Path(out_dir)
    tok_dir = official_demo_tokenizer(out, codebook_size=codebook_size, num_codebooks=8)
    from transformers import AutoTokenizer

    vocab = -(-len(AutoTokenizer.from_pretrained(tok_dir)) // 8) * 8  # resize_token_embeddings(pad_to_multiple_of=8)
    config = dict(TINY_RELEASE, vocab_size=vocab, codebook_size=codebook_size + 8)
    g, h, d = torch.Generator().manual_seed(seed), config["hidden_size"], config["head_dim"]
    kv, ffn, spk = config["num_key_value_heads"] * d, config["intermediate_size"], config["speaker_embedding_size"]
    first = {"model.embed_tokens.weight": (vocab, h)}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        first.update({p + "self_attn.q_proj.weight": (config["num_attention_heads"] * d, h),
                      p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
                      p + "self_attn.o_proj.weight": (h, config["num_attention_heads"] * d),
                      p + "self_attn.q_norm.weight": (d,), p + "self_attn.k_norm.weight": (d,),
                      p + "mlp.gate_proj.weight": (ffn, h), p + "mlp.up_proj.weight": (ffn, h),
                      p + "mlp.down_proj.weight": (h, ffn), p + "input_layernorm.weight": (h,),
                      p + "post_attention_layernorm.weight": (h,)})  # fmt: skip
    second = {"model.norm.weight": (h,), "lm_head.weight": (vocab, h)}
    width = TINY_SENSE_VOICE["width"]
    for name, dim in (("audio_projection", width), ("speaker_projection", spk)):
        second.update({f"model.{name}.pre_proj_layernorm.weight": (dim,), f"model.{name}.pre_proj_layernorm.bias": (dim,),
                       f"model.{name}.mlp.0.weight": (h, dim), f"model.{name}.mlp.2.weight": (h, h)})  # fmt: skip
    shards = [{k: _random(g, s, k) for k, s in first.items()}, {k: _random(g, s, k) for k, s in second.items()}]
    shards[1].update(_sense_voice_tensors(g, TINY_SENSE_VOICE))
    weight_map = {}
    for i, tensors in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(tensors, out / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, name))
    index = {"metadata": {"total_size": sum(t.numel() * 2 for s in shards for t in s.values())}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
