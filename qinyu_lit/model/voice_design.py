"""VoiceDesign (text-to-timbre): a speaker embedding from a description of the voice.

    description --tokenizer--> frozen text encoder --last token, L2 norm--> Linear -> condition c [B, D]
    noise z [B, D] --Euler on the flow v(x, t | c) (``flow_estimator.FlowEstimator``)--> speaker embedding [B, D]

The release (VITA-QinYu ``VoiceDesign/``) uses Qwen3-Embedding-0.6B (frozen, 1024-d, at most 512 tokens)
and D = 192 (CAM++). Only the projection and the estimator train (~19M parameters at release size). The
sampled vector is the agent voice the speech LM reads at ``<|speaker|>``; the description itself goes
into the system prompt (``stages/voice_design_cli.py``). Training pairs: ``data/voice_design.py``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, AutoTokenizer

from ..data.errors import QinYuError, check_config_dict
from .flow_estimator import FlowEstimator
from .flow_matching import euler_sample, flow_matching_loss

CONFIG_NAME = "voice_design_config.json"
WEIGHTS_NAME = "voice_design.safetensors"


@dataclass
class VoiceDesignConfig:
    """What a VoiceDesign model is built from (``model.init_args.net`` of the recipe).

    Args:
        text_encoder: the frozen text encoder: a pretrained name or directory (``AutoModel``; release:
            ``Qwen/Qwen3-Embedding-0.6B``) or a dict of config fields with ``model_type`` (random, tests).
        tokenizer: its tokenizer (name or directory); ``None``: the ``text_encoder`` name.
        embedding_dim: size of the generated speaker embedding (CAM++: 192); linked from the data.
        filter_size: estimator MLP width (release 512).
        num_layers: estimator layers (release 4).
        num_heads: estimator attention heads (release 4).
        dropout: estimator dropout (release 0.01).
        max_length: descriptions are cut to this many tokens, with a warning (release 512).
        sigma_min: the flow's end-point noise (release 1e-6).
        cond_drop: share of training samples whose condition is zeroed, for guidance (release 0.2).
        text_encoder_dtype: dtype of the frozen encoder (``bfloat16`` on GPU halves its memory); ``None``: float32.
        official_text: apply the release's description normaliser (only for converted release weights).
        text_cache_size: pooled encoder features kept per description (the encoder is frozen, so a repeated
            description costs nothing); 0 = no cache.
    """

    text_encoder: str | dict = "Qwen/Qwen3-Embedding-0.6B"
    tokenizer: str | None = None
    embedding_dim: int = 192
    filter_size: int = 512
    num_layers: int = 4
    num_heads: int = 4
    dropout: float = 0.01
    max_length: int = 512
    sigma_min: float = 1e-6
    cond_drop: float = 0.2
    text_encoder_dtype: str | None = None
    official_text: bool = False
    text_cache_size: int = 65536


def official_normalize(description: str) -> str:
    """The release's normaliser for descriptions outside its 「」 template: it deletes 该角色是一个, 年,
    性 (and so 性格) and the brackets. Reproduced only for its weights (``official_text``)."""
    match = re.search(r"该角色是一个「(.*?)」年「(.*?)」性， 性格「(.*?)」", description)
    if match:
        age, gender, temper = (g.strip() for g in match.groups())
        parts = ([f"{age}年{gender}性"] if age and gender else []) + ([f"性格{temper}"] if temper else [])
        return ("，".join(parts) + "。").replace("，，", "，")
    cleaned = description.replace("该角色是一个", "").replace("年", "").replace("性", "")
    cleaned = re.sub(r"[「」]", "", cleaned).strip()
    return cleaned or "一个通用角色。"


def build_text_encoder(spec: str | dict, dtype: str | None = None) -> nn.Module:
    """Any ``transformers`` encoder or decoder that returns ``last_hidden_state`` (``AutoModel``)."""
    torch_dtype = getattr(torch, dtype) if dtype else None
    if isinstance(spec, str):
        return AutoModel.from_pretrained(spec, dtype=torch_dtype)
    spec = dict(spec)
    model_type = spec.pop("model_type", None)
    if model_type not in CONFIG_MAPPING:
        raise QinYuError(f"net.text_encoder: model_type must name a transformers model (e.g. 'qwen3'), got {model_type!r}")
    check_config_dict(CONFIG_MAPPING[model_type], spec, "net.text_encoder")
    model = AutoModel.from_config(AutoConfig.for_model(model_type, **spec))
    return model.to(torch_dtype) if torch_dtype else model


class VoiceDesignModel(nn.Module):
    """Frozen text encoder + trainable projection + flow estimator; ``loss`` trains, ``sample`` designs."""

    TRAINABLE = ("text_proj.*", "estimator.*")

    def __init__(self, config: VoiceDesignConfig):
        super().__init__()
        self.config = config
        if config.tokenizer is None and not isinstance(config.text_encoder, str):
            raise QinYuError("net.tokenizer: a text encoder built from a config dict needs a tokenizer name or directory")
        self.tokenizer = AutoTokenizer.from_pretrained(config.tokenizer or config.text_encoder)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.text_encoder = build_text_encoder(config.text_encoder, config.text_encoder_dtype).eval().requires_grad_(False)
        hidden = self.text_encoder.config.hidden_size
        self.text_proj = nn.Linear(hidden, config.embedding_dim)
        self.estimator = FlowEstimator(config.embedding_dim, config.embedding_dim, config.filter_size,
                                       config.num_layers, config.num_heads, config.dropout)  # fmt: skip
        self._cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True):
        super().train(mode)
        self.text_encoder.eval()  # frozen: no dropout, and the feature cache stays valid
        return self

    # ------------------------------------------------------------------ text -> condition

    def check_descriptions(self, descriptions: list[str]) -> list[str]:
        """Refuse empty descriptions; warn (naming the limit) about ones the encoder will cut."""
        for i, d in enumerate(descriptions):
            if not isinstance(d, str) or not d.strip():
                raise QinYuError(f"description {i}: empty; describe the voice (e.g. 'a calm old man, a lighthouse keeper')")
        texts = [official_normalize(d) for d in descriptions] if self.config.official_text else list(descriptions)
        lengths = [len(ids) for ids in self.tokenizer(texts)["input_ids"]]
        for i, n in enumerate(lengths):
            if n > self.config.max_length:
                warnings.warn(f"description {i}: {n} tokens, cut to the text encoder's limit of "
                              f"{self.config.max_length} (net.max_length)", stacklevel=2)  # fmt: skip
        return texts

    def text_features(self, descriptions: list[str]) -> torch.Tensor:
        """Pooled, L2-normalised encoder features ``[B, hidden]`` (float32); cached per description while
        the encoder is frozen (a recipe may train a random toy encoder: then no cache and with gradients)."""
        if self.encoder_trains:
            return self._encode(self.check_descriptions(descriptions))
        missing = [d for d in dict.fromkeys(descriptions) if d not in self._cache]
        if missing:
            with torch.no_grad():
                pooled = self._encode(self.check_descriptions(missing))
            if not self.config.text_cache_size:
                return pooled[[missing.index(d) for d in descriptions]]
            if len(self._cache) + len(missing) > self.config.text_cache_size:
                self._cache.clear()
            self._cache.update(zip(missing, pooled, strict=True))
        return torch.stack([self._cache[d] for d in descriptions])

    @property
    def encoder_trains(self) -> bool:
        return any(p.requires_grad for p in self.text_encoder.parameters())

    def _encode(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.config.max_length,
                               return_tensors="pt").to(self.text_proj.weight.device)  # fmt: skip
        hidden = self.text_encoder(**batch).last_hidden_state
        mask = batch["attention_mask"]
        last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # the last real token, left or right padding
        return F.normalize(hidden[torch.arange(len(texts)), last].float(), dim=-1)

    def condition(self, descriptions: list[str]) -> torch.Tensor:
        """The estimator's condition ``[B, embedding_dim]``: projected text features, in the weights' dtype
        (under bf16 autocast the Linear returns bf16: the flow's state and targets stay in fp32)."""
        dtype = self.text_proj.weight.dtype
        return self.text_proj(self.text_features(descriptions).to(dtype)).to(dtype)

    # ------------------------------------------------------------------ train / sample

    def loss(self, embeddings: torch.Tensor, descriptions: list[str]) -> torch.Tensor:
        """Flow-matching loss of a batch of (description, speaker embedding ``[B, D]``) pairs."""
        cond = self.condition(descriptions)
        return flow_matching_loss(self.estimator, embeddings.to(cond.dtype), cond, self.config.sigma_min, self.config.cond_drop)

    def forward(self, embeddings: torch.Tensor, descriptions: list[str]) -> torch.Tensor:
        return self.loss(embeddings, descriptions)

    @torch.no_grad()
    def sample(self, descriptions: list[str], steps: int = 20, guidance: float = 1.7, temperature: float = 1.0,
               seed: int | None = None, unconditional: bool = False, trajectory: list | None = None) -> torch.Tensor:  # fmt: skip
        """Speaker embeddings ``[B, D]`` for the descriptions (``unconditional``: condition zeroed)."""
        cond = self.condition(descriptions)
        if unconditional:
            cond = torch.zeros_like(cond)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        was_training = self.estimator.training
        self.estimator.eval()
        try:
            return euler_sample(self.estimator, cond, self.config.embedding_dim, steps, guidance, temperature,
                                generator=generator, trajectory=trajectory)  # fmt: skip
        finally:
            self.estimator.train(was_training)

    # ------------------------------------------------------------------ weights

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained parts; a random (dict-config) text encoder too, since no name can rebuild it."""
        named = isinstance(self.config.text_encoder, str) and not self.encoder_trains
        keep = ("text_proj.", "estimator.") + (() if named else ("text_encoder.",))
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if k.startswith(keep)}

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """``voice_design_config.json`` + ``voice_design.safetensors`` (the frozen encoder stays a name)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file(self.trainable_state(), out / WEIGHTS_NAME, metadata={"format": "pt"})
        (out / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VoiceDesignModel:
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise QinYuError(f"{path}: not a VoiceDesign directory (no {CONFIG_NAME}; `qinyu-lit voice-design --help`)")
        model = cls(VoiceDesignConfig(**json.loads((path / CONFIG_NAME).read_text())))
        model.load_trained(load_file(path / WEIGHTS_NAME), str(path / WEIGHTS_NAME))
        return model

    def load_trained(self, state: dict[str, torch.Tensor], where: str) -> None:
        """Load ``trainable_state`` tensors, every expected one present and nothing unknown."""
        expected = set(self.trainable_state())
        unknown, missing = sorted(set(state) - expected), sorted(expected - set(state))
        if unknown or missing:
            raise QinYuError(f"{where}: not this VoiceDesign model's weights (unknown {unknown[:3]}, missing {missing[:3]})")
        self.load_state_dict(state, strict=False)
