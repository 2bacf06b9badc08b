"""The release's VoiceDesign weights: a tiny state dict in the release's key layout converts, and our sampler
on the converted weights equals a reference written here from the release's forward (not our code)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer

from qinyu_lit.cli import main
from qinyu_lit.model.flow_matching import euler_sample
from qinyu_lit.model.voice_design import VoiceDesignModel, official_normalize
from qinyu_lit.model.voice_design_official import convert_state
from qinyu_lit.tiny_configs import TINY_TEXT_ENCODER

D, H, FILTER, LAYERS, HEADS = 8, 16, 12, 2, 2  # release: 192, 384 = 192 + 192, 512, 4, 4
pytestmark = pytest.mark.usefixtures("one_thread")


def release_state_dict(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Random tensors under the release's names and shapes (Text2SpeakerEmbeddingFlow.state_dict())."""
    g = torch.Generator().manual_seed(0)
    shapes = {"time_mlp.layer.0.weight": (FILTER, H), "time_mlp.layer.0.bias": (FILTER,),
              "time_mlp.layer.2.weight": (H, FILTER), "time_mlp.layer.2.bias": (H,),
              "final_proj.weight": (D, H, 1), "final_proj.bias": (D,)}  # fmt: skip
    for i in range(LAYERS):
        b = f"blocks.{i}."
        shapes.update({b + "time_fusion.film.weight": (2 * H, H, 1), b + "time_fusion.film.bias": (2 * H,)})
        for k in (1, 2, 3):
            c = f"{b}conv{k}."
            shapes.update({c + "dwconv.weight": (H, 1, 7), c + "dwconv.bias": (H,), c + "norm.saln.weight": (2 * H, D),
                           c + "norm.saln.bias": (2 * H,), c + "pwconv.0.weight": (FILTER, H), c + "pwconv.0.bias": (FILTER,),
                           c + "pwconv.2.weight": (H, FILTER), c + "pwconv.2.bias": (H,)})  # fmt: skip
        d = b + "block."
        shapes.update({d + "attn.qkv.weight": (3 * H, H), d + "attn.qkv.bias": (3 * H,), d + "attn.proj.weight": (H, H),
                       d + "attn.proj.bias": (H,), d + "mlp.conv_1.weight": (H, H, 3), d + "mlp.conv_1.bias": (H,),
                       d + "mlp.conv_2.weight": (H, H, 3), d + "mlp.conv_2.bias": (H,),
                       d + "adaLN_modulation.0.weight": (H, D), d + "adaLN_modulation.0.bias": (H,),
                       d + "adaLN_modulation.2.weight": (6 * H, H), d + "adaLN_modulation.2.bias": (6 * H,)})  # fmt: skip
    state = {f"decoder.estimator.{k}": 0.3 * torch.randn(s, generator=g) for k, s in shapes.items()}
    hidden = text_encoder.config.hidden_size
    state["decoder.text_encoder.projection.weight"] = 0.3 * torch.randn(D, hidden, generator=g)
    state["decoder.text_encoder.projection.bias"] = 0.3 * torch.randn(D, generator=g)
    state.update({f"decoder.text_encoder.text_encoder.{k}": v for k, v in text_encoder.state_dict().items()})
    return state


def reference_velocity(sd, x, t, cond):
    """The release's dit_estimator.Decoder.forward, written out: x [B, D, 1], t scalar, cond [B, D]."""
    p = {k.removeprefix("decoder.estimator."): v for k, v in sd.items()}
    h = torch.cat([x, cond.unsqueeze(-1)], dim=1)
    half = H // 2
    freqs = torch.exp(torch.arange(half).float() * -(math.log(10000) / (half - 1)))
    e = 1000 * t.reshape(1, 1) * freqs[None]
    tt = F.linear(F.silu(F.linear(torch.cat([e.sin(), e.cos()], -1), p["time_mlp.layer.0.weight"], p["time_mlp.layer.0.bias"])),
                  p["time_mlp.layer.2.weight"], p["time_mlp.layer.2.bias"])  # fmt: skip
    for i in range(LAYERS):
        b = f"blocks.{i}."
        gamma, beta = F.conv1d(tt.unsqueeze(2), p[b + "time_fusion.film.weight"], p[b + "time_fusion.film.bias"]).chunk(2, 1)
        h = gamma * h + beta
        for k in (1, 2, 3):
            c = f"{b}conv{k}."
            y = F.conv1d(h, p[c + "dwconv.weight"], p[c + "dwconv.bias"], padding=3, groups=H).transpose(1, 2)
            g_, b_ = F.linear(cond.unsqueeze(1), p[c + "norm.saln.weight"], p[c + "norm.saln.bias"]).chunk(2, -1)
            y = g_ * F.layer_norm(y, (H,)) + b_
            y = F.linear(F.gelu(F.linear(y, p[c + "pwconv.0.weight"], p[c + "pwconv.0.bias"])), p[c + "pwconv.2.weight"], p[c + "pwconv.2.bias"])
            h = h + y.transpose(1, 2)
        d = b + "block."
        ada = F.linear(F.silu(F.linear(cond, p[d + "adaLN_modulation.0.weight"], p[d + "adaLN_modulation.0.bias"])),
                       p[d + "adaLN_modulation.2.weight"], p[d + "adaLN_modulation.2.bias"])  # fmt: skip
        sh1, sc1, g1, sh2, sc2, g2 = ada.unsqueeze(2).chunk(6, dim=1)
        n1 = F.layer_norm(h.transpose(1, 2), (H,), eps=1e-6).transpose(1, 2) * (1 + sc1) + sh1
        xa = n1.transpose(1, 2)
        B, N, C = xa.shape
        q, k_, v = F.linear(xa, p[d + "attn.qkv.weight"], p[d + "attn.qkv.bias"]).reshape(B, N, 3, HEADS, C // HEADS).permute(2, 0, 3, 1, 4)
        att = ((q @ k_.transpose(-2, -1)) * (C // HEADS) ** -0.5).softmax(-1)
        o = F.linear((att @ v).transpose(1, 2).reshape(B, N, C), p[d + "attn.proj.weight"], p[d + "attn.proj.bias"])
        h = h + g1 * o.transpose(1, 2)
        n2 = F.layer_norm(h.transpose(1, 2), (H,), eps=1e-6).transpose(1, 2) * (1 + sc2) + sh2
        f = F.conv1d(F.gelu(F.conv1d(n2, p[d + "mlp.conv_1.weight"], p[d + "mlp.conv_1.bias"], padding=1), approximate="tanh"),
                     p[d + "mlp.conv_2.weight"], p[d + "mlp.conv_2.bias"], padding=1)  # fmt: skip
        h = h + g2 * f
    return F.conv1d(h, p["final_proj.weight"], p["final_proj.bias"])


def reference_sample(sd, z, cond, steps=20, rate=0.7):
    """The release's ConditionalCFMForSpeakerEmbedding.solve_euler with its CFG branch."""
    t_span = 1 - torch.cos(torch.linspace(0, 1, steps + 1) * 0.5 * torch.pi)
    x, t, dt = z.unsqueeze(-1), t_span[0], t_span[1] - t_span[0]
    for step in range(1, len(t_span)):
        v = reference_velocity(sd, x, t, cond)
        v = (1.0 + rate) * v - rate * reference_velocity(sd, x, t, torch.zeros_like(cond))
        x, t = x + dt * v, t + dt
        if step < len(t_span) - 1:
            dt = t_span[step + 1] - t
    return x.squeeze(-1)


def test_converted_release_weights_sample_as_the_release(demo_dir, tmp_path):
    torch.manual_seed(0)
    cfg = dict(TINY_TEXT_ENCODER)
    encoder = AutoModel.from_config(AutoConfig.for_model(cfg.pop("model_type"), **cfg)).eval()
    sd = release_state_dict(encoder)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "flow.pt")  # DeepSpeed-style wrap
    main(["convert-voice-design", str(tmp_path / "flow.pt"), str(tmp_path / "vd"), "--text_encoder", json.dumps(TINY_TEXT_ENCODER),
          "--tokenizer", str(demo_dir / "tokenizer"), "--num_heads", str(HEADS)])  # fmt: skip
    model = VoiceDesignModel.from_pretrained(tmp_path / "vd").eval()
    assert model.config.official_text and model.config.embedding_dim == D and model.config.num_layers == LAYERS

    texts = ["该角色是一个老年男性，身份是船长, 性格急躁", "a calm young woman"]
    assert official_normalize(texts[0]) == "老男，身份是船长, 格急躁"  # the release deletes 该角色是一个, 年, 性
    tok = AutoTokenizer.from_pretrained(demo_dir / "tokenizer", padding_side="left")
    batch = tok([official_normalize(t) for t in texts], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = F.normalize(encoder(**batch).last_hidden_state[:, -1], dim=1)  # release: left padding, last column
        cond = F.linear(pooled, sd["decoder.text_encoder.projection.weight"], sd["decoder.text_encoder.projection.bias"])
        ours_cond = model.condition(texts)
        torch.testing.assert_close(ours_cond, cond, atol=1e-5, rtol=0)
        z = torch.randn(2, D, generator=torch.Generator().manual_seed(1))
        ours = euler_sample(model.estimator, ours_cond, D, steps=20, guidance=1.7, noise=z)
        torch.testing.assert_close(ours, reference_sample(sd, z, cond), atol=1e-5, rtol=0)


def test_an_unmapped_release_tensor_stops_with_its_name():
    with pytest.raises(ValueError, match=r"release tensor 'decoder.estimator.blocks.0.extra.weight' \[2\]: no row"):
        convert_state({"decoder.estimator.final_proj.bias": torch.zeros(2), "decoder.estimator.blocks.0.extra.weight": torch.zeros(2)})
