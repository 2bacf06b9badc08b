"""The released VITA-QinYu, converted: a tiny checkpoint in the release's layout converts, and the converted
model's logits and loss equal a reference of the release's forward written here from its design
(official_spec §3, §5, §6): embed_tokens for text, the mean of 8 embed rows for a frame, SenseVoice (4 query
frames + SAN-M) and the projector for user speech, the speaker MLP, one lm_head and its slices."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from qinyu_lit.cli import main
from qinyu_lit.model.qinyu import QinYuModel
from qinyu_lit.model.tiny import write_tiny_release

K, C = 16, 8  # codes per codebook, codebooks
R = K + C  # rows per codebook: codes + positional pads
E = "model.audio_model.model."


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_tiny_release(tmp_path_factory.mktemp("release"), codebook_size=K)


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted") / "export"
    main(["convert-official", str(release), str(out)])
    return out


def official_tensors(release) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(release.glob("model-*.safetensors")):
        tensors.update({k: v.float() for k, v in load_file(shard).items()})
    return tensors


# --------------------------------------------------------------------------- a sample, by the release's rules


def delayed_frames(codes: torch.Tensor) -> torch.Tensor:
    """[C, T] codes -> [T + C - 1, C] local values: codebook i, frame k: pad k before, code, pad k - T after."""
    frames = codes.shape[1] + C - 1
    out = torch.empty(frames, C, dtype=torch.long)
    for i in range(C):
        for k in range(frames):
            out[k, i] = (
                K + k if k < i else codes[i, k - i] if k < i + codes.shape[1] else K + k - codes.shape[1]
            )
    return out


def official_sample(release):
    """§4.8: voice in the system prompt, user speech (3 LFR frames -> 7 placeholders), a reply of text
    interleaved 1/8/4/8 with 10 speech frames (17 delayed frames) ending in <|end_of_conv|>."""
    tok = AutoTokenizer.from_pretrained(release)
    tid = tok.convert_tokens_to_ids
    text = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    g = torch.Generator().manual_seed(1)
    frames = delayed_frames(torch.randint(0, K, (C, 10), generator=g))
    base = tid("<|audio_0_0|>")
    head = lambda role: [tid("<|im_start|>"), *text(role), *text("\n")]  # noqa: E731
    end = [tid("<|im_end|>"), *text("\n")]
    ids = head("system") + text("Your Voice Embedding: ") + [tid("<|speaker|>")] + end
    ids += (
        head("user")
        + [tid("<|user_speaker|>"), tid("<|begin_of_audio|>")]
        + [tid("<|context_of_audio|>")] * 7
    )
    ids += [tid("<|end_of_audio|>")] + end + head("assistant")
    start, t = len(ids), text(" hello there my friend, sail on")[:6]
    spans, reply = [], [[t[0]], frames[:8], t[1:5], frames[8:16], [t[5], tid("<|end_of_conv|>")], frames[16:]]
    for piece in reply:
        if isinstance(piece, torch.Tensor):
            spans.append((len(ids), len(ids) + len(piece)))
            ids += (base + piece[:, 0]).tolist()
        else:
            ids += piece
    ids += end
    codes = torch.full((len(ids), C), -1)
    for (s, e), piece in zip(spans, (frames[:8], frames[8:16], frames[16:]), strict=True):
        codes[s:e] = piece
    mask = torch.zeros(len(ids), dtype=torch.bool)
    mask[start:] = True  # the last assistant turn: content, <|im_end|> and the "\n" after it
    batch = dict(
        input_ids=torch.tensor([ids]), codes=codes[None], target_mask=mask[None],
        position_ids=torch.arange(len(ids))[None], speakers=torch.randn(2, 16, generator=g),
        audio_features=torch.randn(1, 3, 56, generator=g), audio_feature_lens=torch.tensor([3]),
    )  # fmt: skip
    return batch, spans, frames


# --------------------------------------------------------------------------- the reference forward


def layer_norm(t, name, x):
    return F.layer_norm(x, x.shape[-1:], t[name + ".weight"], t[name + ".bias"], eps=1e-5)


def projector(t, prefix, x):  # ResamplerProjector / SpeakerProjector: LN, Linear, GELU (erf), Linear, no bias
    x = layer_norm(t, prefix + "pre_proj_layernorm", x)
    return F.gelu(x @ t[prefix + "mlp.0.weight"].T) @ t[prefix + "mlp.2.weight"].T


def san_m_block(t, p, x, heads=4):
    """One SenseVoice SAN-M block, pre-LN; no attention residual when the width changes (encoders0)."""
    width = t[p + "self_attn.linear_out.weight"].shape[0]
    q, k, v = (layer_norm(t, p + "norm1", x) @ t[p + "self_attn.linear_q_k_v.weight"].T
               + t[p + "self_attn.linear_q_k_v.bias"]).split(width, -1)  # fmt: skip
    split = lambda y: y.view(len(y), heads, -1).transpose(0, 1)  # noqa: E731
    scores = split(q) @ split(k).transpose(1, 2) / math.sqrt(width // heads)
    att = (scores.softmax(-1) @ split(v)).transpose(0, 1).reshape(len(x), width)
    att = att @ t[p + "self_attn.linear_out.weight"].T + t[p + "self_attn.linear_out.bias"]
    kernel = t[p + "self_attn.fsmn_block.weight"]
    half = kernel.shape[-1] // 2
    fsmn = F.conv1d(F.pad(v.T[None], (half, half)), kernel, groups=width)[0].T + v
    x = x + att + fsmn if x.shape[-1] == width else att + fsmn
    ffn = F.relu(
        layer_norm(t, p + "norm2", x) @ t[p + "feed_forward.w_1.weight"].T + t[p + "feed_forward.w_1.bias"]
    )
    return x + ffn @ t[p + "feed_forward.w_2.weight"].T + t[p + "feed_forward.w_2.bias"]


def sense_voice(t, feats):
    """inference_encode: query rows 0, 1, 2, 15 before the LFR frames, x * sqrt(width) + PE (positions from 1)."""
    x = torch.cat([t[E + "embed.weight"][[0, 1, 2, 15]], feats])
    depth, width = x.shape[1], t[E + "encoder.after_norm.weight"].shape[0]
    inv = torch.exp(-math.log(1e4) / (depth // 2 - 1) * torch.arange(depth // 2))
    pos = torch.arange(1, len(x) + 1)[:, None] * inv
    x = x * math.sqrt(width) + torch.cat([pos.sin(), pos.cos()], -1)
    x = san_m_block(t, E + "encoder.encoders0.0.", x)
    for i in range(sum(1 for n in t if n.startswith(E + "encoder.encoders.") and n.endswith("norm1.weight"))):
        x = san_m_block(t, f"{E}encoder.encoders.{i}.", x)
    x = layer_norm(t, E + "encoder.after_norm", x)
    for i in range(
        sum(1 for n in t if n.startswith(E + "encoder.tp_encoders.") and n.endswith("norm1.weight"))
    ):
        x = san_m_block(t, f"{E}encoder.tp_encoders.{i}.", x)
    return layer_norm(t, E + "encoder.tp_norm", x)


@torch.no_grad()
def reference_logits(release, batch, spans, frames):
    """The release's forward (§3) on official tensors: [S, V] logits of its one lm_head."""
    t, tid = official_tensors(release), AutoTokenizer.from_pretrained(release).convert_tokens_to_ids
    ids, base = batch["input_ids"][0], tid("<|audio_0_0|>")
    x = t["model.embed_tokens.weight"][ids]
    rows = torch.cat([frames[:8], frames[8:16], frames[16:]])
    positions = torch.cat([torch.arange(s, e) for s, e in spans])
    x[positions] = t["model.embed_tokens.weight"][base + R * torch.arange(C) + rows].mean(1)
    speech = projector(t, "model.audio_projection.", sense_voice(t, batch["audio_features"][0]))
    x[ids == tid("<|context_of_audio|>")] = speech
    speaker_mask = (ids == tid("<|speaker|>")) | (ids == tid("<|user_speaker|>"))
    x[speaker_mask] = projector(t, "model.speaker_projection.", batch["speakers"])
    config = json.loads((release / "config.json").read_text())
    keep = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta", "max_position_embeddings",
            "tie_word_embeddings")  # fmt: skip
    qwen3 = AutoModelForCausalLM.from_config(AutoConfig.for_model("qwen3", **{k: config[k] for k in keep}))
    qwen3.load_state_dict({k: v for k, v in t.items() if not k.startswith(("model.audio", "model.speaker"))})
    return qwen3.eval()(inputs_embeds=x[None], position_ids=batch["position_ids"]).logits[0]


def reference_loss(logits, batch, spans, frames, base):
    """compute_xy_loss (§5): text + codebook 0 over the shared head, shifted; codebooks 1..7 at audio positions."""
    v1, w = base + R, (C - 1) * R
    labels = torch.where(batch["target_mask"][0], batch["input_ids"][0], -100)
    text_logits = torch.cat([logits[:, :v1], logits[:, v1 + w :]], -1)
    text_labels = torch.where(labels >= v1 + w, labels - w, labels)
    loss = F.cross_entropy(text_logits[:-1], text_labels[1:], ignore_index=-100)
    pred = torch.cat([torch.arange(s - 1, e - 1) for s, e in spans])
    audio_labels = torch.cat([frames[:8], frames[8:16], frames[16:]])
    per_codebook = [F.cross_entropy(logits[pred, base + R * i : base + R * (i + 1)], audio_labels[:, i])
                    for i in range(1, C)]  # fmt: skip
    return loss + torch.stack(per_codebook).mean()


# --------------------------------------------------------------------------- tests


def test_converted_release_matches_the_reference_forward(release, converted):
    model = QinYuModel.from_pretrained(str(converted), dtype="float32")
    batch, spans, frames = official_sample(release)
    ids = batch["input_ids"][0]
    tid = model.tokenizer.convert_tokens_to_ids
    assert int((ids == tid("<|context_of_audio|>")).sum()) == 3 + 4  # N + 4 placeholders for SenseVoice
    assert int(frames.max()) == K + C - 2 and model.codebook_embed.num_embeddings == C * R  # pads 0..6 used
    ref = reference_logits(release, batch, spans, frames)
    base = tid("<|audio_0_0|>")
    with torch.no_grad():
        hidden = model.hidden_states(batch)[0]
        head0, codes = model.head0_logits(hidden), model.code_logits(hidden)
        loss = model.loss(batch).loss
    v1, w = base + R, (C - 1) * R
    torch.testing.assert_close(head0, torch.cat([ref[:, :v1], ref[:, v1 + w :]], -1))
    assert codes.shape == (len(ids), C - 1, R)
    for i in range(1, C):
        torch.testing.assert_close(codes[:, i - 1], ref[:, base + R * i : base + R * (i + 1)])
    torch.testing.assert_close(loss, reference_loss(ref, batch, spans, frames, base))


def test_every_tensor_is_mapped_and_the_encoder_renamed(release, converted):
    official = official_tensors(release)
    parts = load_file(converted / "qinyu_parts.safetensors")
    backbone = {}
    for shard in (converted / "backbone").glob("*.safetensors"):
        backbone.update(load_file(shard))
    assert set(backbone) == {
        k for k in official if k.startswith(("model.layers", "model.norm", "model.embed", "lm_"))
    }
    qkv = official[E + "encoder.encoders0.0.self_attn.linear_q_k_v.weight"]
    assert torch.equal(parts["audio_encoder.layers.0.self_attn.k_proj.weight"].float(), qkv[32:64])
    assert torch.equal(
        parts["audio_encoder.layers.1.final_layernorm.bias"].float(), official[E + "encoder.after_norm.bias"]
    )
    assert torch.equal(
        parts["audio_encoder.layers.2.final_layernorm.bias"].float(), official[E + "encoder.tp_norm.bias"]
    )
    base = AutoTokenizer.from_pretrained(release).convert_tokens_to_ids("<|audio_0_0|>")
    embed = official["model.embed_tokens.weight"]
    assert torch.equal(parts["codebook_embed.weight"].float(), embed[base : base + C * R])
    assert not any("ctc" in k for k in parts)  # the unused CTC head is the one tensor dropped
    config = json.loads((converted / "qinyu_config.json").read_text())
    assert (config["heads"], config["delay_pads"], config["speaker_projector"]) == (
        "shared",
        "positional",
        "mlp",
    )


def test_an_unmapped_tensor_stops_the_conversion(release, tmp_path, capsys):
    extra = tmp_path / "release"
    copy_release(release, extra)
    shard = extra / "model-00002-of-00002.safetensors"
    tensors = load_file(shard)
    tensors["audio_heads.0.weight"] = torch.zeros(R, 64, dtype=torch.bfloat16)
    save_file(tensors, shard)
    index = json.loads((extra / "model.safetensors.index.json").read_text())
    index["weight_map"]["audio_heads.0.weight"] = shard.name
    (extra / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(SystemExit) as stop:  # a user error: one line, exit status 2
        main(["convert-official", str(extra), str(tmp_path / "out")])
    assert stop.value.code == 2 and "tensor audio_heads.0.weight has no entry" in capsys.readouterr().err


def copy_release(release, out, drop_prefix: str | None = None) -> dict:
    """A copy of ``release`` without the tensors under ``drop_prefix``; returns the dropped ones."""
    out.mkdir()
    for f in release.iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    shard = out / "model-00002-of-00002.safetensors"
    tensors = load_file(shard)
    dropped = {k: v for k, v in tensors.items() if drop_prefix and k.startswith(drop_prefix)}
    save_file({k: v for k, v in tensors.items() if k not in dropped}, shard)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if k not in dropped}
    (out / "model.safetensors.index.json").write_text(json.dumps(index))
    return dropped


def test_the_encoder_can_come_from_sense_voice_small_itself(release, converted, tmp_path, capsys):
    encoder = copy_release(release, tmp_path / "release", drop_prefix=E)
    with pytest.raises(SystemExit):
        main(["convert-official", str(tmp_path / "release"), str(tmp_path / "no_encoder")])
    assert "--sense_voice" in capsys.readouterr().err
    own = tmp_path / "model.safetensors"  # SenseVoiceSmall's own names: no model.audio_model.model. prefix
    save_file({k[len(E) :]: v for k, v in encoder.items()}, own)
    main(["convert-official", str(tmp_path / "release"), str(tmp_path / "out"), "--sense_voice", str(own)])
    expected = load_file(converted / "qinyu_parts.safetensors")
    parts = load_file(tmp_path / "out" / "qinyu_parts.safetensors")
    assert parts.keys() == expected.keys() and all(torch.equal(parts[k], expected[k]) for k in parts)
