"""Loading trained checkpoints and asking them for a reply."""

from __future__ import annotations

import torch

from .data.features import FbankLFR, WhisperMel
from .data.layout import TokenLayout
from .data.schema import CodecInfo, Sample, Turn, decode_sample
from .data.stream import collate, expand_shards, iter_raw_samples
from .model.generate import Generated, generate
from .model.qinyu import QinYuConfig, QinYuModel
from .stages.base import QinYuStage


def load_stage(ckpt_path: str, map_location: str = "cpu") -> QinYuStage:
    """Rebuild a stage from a Lightning checkpoint with ``weights_only=True`` (nothing unpickled)."""
    ckpt = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    hp = ckpt["hyper_parameters"]
    stage = QinYuStage(QinYuConfig(**hp["net"]), warmup_ratio=hp.get("warmup_ratio", 0.03), trainable=hp.get("trainable"))
    stage.configure_model()
    stage.load_state_dict(ckpt["state_dict"])
    return stage.eval()


def layout_for(model: QinYuModel, pattern=(1, 8, 4, 8)) -> TokenLayout:
    """The data layout matching a model (same tokenizer, codebooks and encoder front end)."""
    cfg = model.config
    front_end = None
    if model.audio_encoder is not None:
        front_end = FbankLFR() if cfg.audio_encoder_type == "fun_asr_nano" else WhisperMel(model.audio_encoder.config.num_mel_bins)
    return TokenLayout(model.tokenizer, pattern, cfg.num_codebooks, cfg.codebook_size, front_end)


def find_sample(shard_spec: str, key: str) -> Sample:
    for raw in iter_raw_samples(expand_shards(shard_spec)):
        if raw["__key__"] == key:
            return decode_sample(raw)
    raise KeyError(f"no sample {key!r} in {shard_spec}")


def reply_to(
    model: QinYuModel,
    text: str | None = None,
    shard: str | None = None,
    key: str | None = None,
    sample: Sample | None = None,
    system: str = "",
    max_new_positions: int = 512,
    layout: TokenLayout | None = None,
) -> Generated:
    """Generate the (last) assistant turn for a text message, a stored sample, or a ``Sample``."""
    if sample is None:
        if shard and key:
            sample = find_sample(shard, key)
        elif text is not None:
            codec = CodecInfo("model", model.config.num_codebooks, model.config.codebook_size, 12.5, 16000)
            sample = Sample("prompt", "text", [Turn("user", text), Turn("assistant", " ")], codec, system=system)
        else:
            raise ValueError("give text, or shard and key, or a Sample")
    layout = layout or layout_for(model)
    prompt = layout.build(sample, prompt_only=True)
    batch = collate([[prompt]], layout.ids.pad, layout.num_codebooks)
    device = next(model.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return generate(model, batch, max_new_positions=max_new_positions)
