"""The QinYu speech LM: a transformers causal LM plus the few parts QinYu adds (paper §3).

    user speech  -> frozen audio encoder -> adapter (LayerNorm, Linear-GELU-Linear) -.
    speaker vecs -> speaker projector (D -> H) ---------------------------------------+-> inputs_embeds
    text ids     -> the backbone's own embeddings -----------------------------------|
    audio frame  -> mean of its 8 codebook embeddings ------------------------------'
    backbone hidden -> [LM head | codebook-0 head]  (one softmax: text vocab + codebook 0)
                    -> 7 heads for codebooks 1..7

The released VITA-QinYu (``qinyu-lit convert-official``) is the same model with other options:
``heads: shared`` (one lm_head, codebooks as its slices: ``heads.py``), ``delay_pads: positional``
(K + C rows per codebook), ``speaker_projector: mlp``, ``adapter_bias: false``, ``sense_voice``.

Nothing of the backbone is forked or edited: placeholders in ``input_ids`` are swapped
for the injected embeddings, and the decoder runs on ``inputs_embeds`` with
``position_ids`` that restart per packed sample (transformers derives the block-diagonal
mask from them). ``use_cache=False`` in training: with a cache present transformers skips
the packed-sequence detection and attention would leak across samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..data.delay import num_pad_ids
from ..data.tokenizer import load_tokenizer, special_ids
from .attention import packed_attention_kwargs
from .config import QinYuConfig
from .encoders import build_audio_encoder, build_backbone, encoder_width, run_audio_encoder
from .heads import SharedHeads
from .weights import load_exported, save_exported


@dataclass
class LossOutput:
    loss: torch.Tensor  # Eq. 3 averaged over supervised positions (``loss: official``: the release's sum)
    text_loss: torch.Tensor  # CE over text-target positions
    audio_loss: torch.Tensor  # mean-of-8 CE over audio-target positions
    codebook_loss: torch.Tensor  # [C] mean CE of each codebook over audio positions
    codebook_correct: torch.Tensor  # [C] correct argmax count per codebook
    text_correct: torch.Tensor  # correct argmax count over text positions
    num_text: torch.Tensor  # text-target positions (a device tensor: reading it on the host is a sync)
    num_audio: torch.Tensor  # audio-target positions


class QinYuModel(nn.Module):
    def __init__(self, config: QinYuConfig):
        super().__init__()
        self.config = config
        self.tokenizer = load_tokenizer(config.tokenizer, config.token_layout)
        self.ids = special_ids(self.tokenizer, config.token_layout)
        self.backbone = build_backbone(config.backbone, config.attn_implementation, config.dtype)
        if len(self.tokenizer) > self.backbone.get_input_embeddings().num_embeddings:
            self.backbone.resize_token_embeddings(len(self.tokenizer))
        if config.gradient_checkpointing:
            self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if config.compile_layers:  # opt-in: fuses each layer's norms, casts and activations
            for layer in self.backbone.get_decoder().layers:
                layer.compile()
        hidden = self.backbone.config.get_text_config().hidden_size
        dtype = self.backbone.get_input_embeddings().weight.dtype

        self.audio_encoder = None
        if config.audio_encoder is not None:
            self.audio_encoder = build_audio_encoder(config.audio_encoder, config.audio_encoder_type, config.dtype)
            self.audio_encoder.requires_grad_(False).eval()  # frozen in every stage (paper): no dropout either
            width = encoder_width(self.audio_encoder)
            bias = config.adapter_bias
            self.adapter = nn.Sequential(
                nn.LayerNorm(width), nn.Linear(width, hidden, bias=bias), nn.GELU(), nn.Linear(hidden, hidden, bias=bias)
            ).to(dtype)
        if config.speaker_projector == "mlp":  # the release's SpeakerProjector: LN, Linear, GELU, Linear, no biases
            dim = config.speaker_dim
            self.speaker_proj = nn.Sequential(
                nn.LayerNorm(dim), nn.Linear(dim, hidden, bias=False), nn.GELU(), nn.Linear(hidden, hidden, bias=False)
            ).to(dtype)
        else:
            self.speaker_proj = nn.Linear(config.speaker_dim, hidden).to(dtype)

        k = self.rows_per_codebook  # codes + the delay pad(s)
        self.codebook_embed = nn.Embedding(config.num_codebooks * k, hidden).to(dtype)  # one table, offset per codebook
        std = getattr(self.backbone.config.get_text_config(), "initializer_range", 0.02)
        nn.init.normal_(self.codebook_embed.weight, std=std)
        self.shared = None
        if config.heads == "shared":  # the release: the backbone's lm_head already holds the audio rows
            self.shared = SharedHeads(self.ids.audio_base, k, config.num_codebooks)
            self._check_shared_vocab()
        else:
            self.code0_head = nn.Linear(hidden, k, bias=False).to(dtype)  # the LM head's extension
            self.code_heads = nn.ModuleList(
                nn.Linear(hidden, k, bias=False).to(dtype) for _ in range(config.num_codebooks - 1)
            )
        self.register_buffer("code_offsets", torch.arange(config.num_codebooks) * k, persistent=False)

    # ------------------------------------------------------------------ sizes

    @property
    def text_vocab(self) -> int:
        """Rows of the backbone's LM head; codebook-0 code c is class ``text_vocab + c``."""
        return self.backbone.get_output_embeddings().out_features

    @property
    def pad_code(self) -> int:
        return self.config.codebook_size

    @property
    def rows_per_codebook(self) -> int:
        """Values of one codebook: the codes, then one pad (``single``) or C positional pads."""
        return self.config.codebook_size + num_pad_ids(self.config.delay_pads, self.config.num_codebooks)

    def audio_class(self, value):
        """Class of codebook-0 value ``value`` in the head-0 (text + codebook 0) space."""
        return self.text_vocab + value if self.shared is None else self.shared.code0_class(value)

    def split_class(self, choice: int) -> tuple[bool, int]:
        """A head-0 class -> (True, codebook-0 value) or (False, text token id); for decoding."""
        first = self.audio_class(0)
        if first <= choice < first + self.rows_per_codebook:
            return True, choice - first
        return False, choice if self.shared is None else self.shared.token_of_class(choice)

    def _check_shared_vocab(self) -> None:
        rows, end = self.backbone.get_output_embeddings().out_features, self.shared.block_start
        end += self.shared.block_width
        if self.config.token_layout != "official" or rows < end:
            raise ValueError(
                f"heads: shared needs token_layout: official and a vocabulary holding the {self.config.num_codebooks}"
                f" x {self.rows_per_codebook} audio tokens (up to id {end}); the backbone has {rows} rows "
                "(model.init_args.net.heads / token_layout / tokenizer)"
            )

    @classmethod
    def from_pretrained(cls, path: str, dtype: str | None = None) -> QinYuModel:
        """Load a directory written by ``save_pretrained`` / ``qinyu-lit export`` (see ``model/weights.py``)."""
        return load_exported(cls, path, dtype=dtype)

    def save_pretrained(self, path: str):
        """Backbone in Hugging Face format (any LoRA merged in), QinYu parts in safetensors, their config."""
        return save_exported(self, path)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.audio_encoder is not None:
            self.audio_encoder.eval()  # frozen: no dropout, whatever the stage does
        return self

    # ------------------------------------------------------------------ inputs

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., C] codes -> [..., H]: the mean of the C codebook embeddings (paper: averaged input)."""
        return self.codebook_embed(codes + self.code_offsets).mean(-2)

    def embed_inputs(self, batch: dict) -> torch.Tensor:
        ids, codes = batch["input_ids"], batch["codes"]
        embeds = self.backbone.get_input_embeddings()(ids)
        is_audio = codes[..., 0] >= 0
        if is_audio.any():
            frames = self.embed_codes(codes[is_audio]).to(embeds.dtype)
            embeds = embeds.masked_scatter(is_audio[..., None], frames)
        is_speaker = (ids == self.ids.speaker) | (ids == self.ids.user_speaker)
        if is_speaker.any():
            spk = batch["speakers"].to(embeds.device, next(self.speaker_proj.parameters()).dtype)
            if spk.shape[0] != int(is_speaker.sum()) or spk.shape[-1] != self.config.speaker_dim:
                raise ValueError(
                    f"batch has {int(is_speaker.sum())} speaker placeholders but speaker embeddings of shape "
                    f"{tuple(spk.shape)}; the model expects dimension {self.config.speaker_dim} (model.net.speaker_dim)"
                )
            embeds = embeds.masked_scatter(is_speaker[..., None], self.speaker_proj(spk).to(embeds.dtype))
        is_user_audio = ids == self.ids.audio
        if is_user_audio.any():
            if self.audio_encoder is None:
                raise ValueError("the batch holds user speech but the model has no audio encoder (model.net.audio_encoder)")
            audio = self.encode_audio(batch["audio_features"], batch["audio_feature_lens"])
            if audio.shape[0] != int(is_user_audio.sum()):
                raise ValueError(f"{int(is_user_audio.sum())} <|audio|> placeholders but {audio.shape[0]} encoder frames")
            embeds = embeds.masked_scatter(is_user_audio[..., None], audio.to(embeds.dtype))
        return embeds

    def encode_audio(self, features: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """Frozen encoder (no graph kept) + trainable adapter -> [sum of frames, H]."""
        if self.audio_encoder.training:
            # Lightning restores each submodule's own train/eval flag (undoing ``train()`` above);
            # the frozen encoder must never run its dropout, so the model enforces it where it is used
            self.audio_encoder.eval()
        enc_dtype = next(self.audio_encoder.parameters()).dtype
        with torch.no_grad():
            per_clip = run_audio_encoder(self.audio_encoder, features.to(enc_dtype), lens, self.config.audio_encoder_type)
        return self.adapter(torch.cat(per_clip).to(self.adapter[1].weight.dtype))

    # ------------------------------------------------------------------ forward

    def hidden_states(self, batch: dict, **kwargs) -> torch.Tensor:
        decoder = self.backbone.get_decoder()
        # qinyu_varlen / flash attention: sample boundaries once per forward, for every layer
        kwargs = {**packed_attention_kwargs(decoder.config, batch["position_ids"]), **kwargs}
        out = decoder(inputs_embeds=self.embed_inputs(batch), position_ids=batch["position_ids"], use_cache=False, **kwargs)
        return out.last_hidden_state

    def head0_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The extended LM head: [..., text_vocab + codebook_size + 1] (shared: the vocabulary minus codebooks 1..)."""
        lm = self.backbone.get_output_embeddings()(hidden)
        if self.shared is not None:
            return self.shared.head0(lm)
        return torch.cat([lm, self.code0_head(hidden).to(lm.dtype)], dim=-1)

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Codebooks 1..C-1: [..., C-1, rows_per_codebook]."""
        if self.shared is not None:
            return self.shared.codes(self.backbone.get_output_embeddings()(hidden))
        return torch.stack([head(hidden) for head in self.code_heads], dim=-2)

    def forward(self, batch: dict) -> LossOutput:
        return self.loss(batch)

    def _untouched_zero(self) -> torch.Tensor:
        """0 x every trainable parameter outside the backbone: a batch without audio targets, speakers or
        user speech leaves heads, codebook embeddings, projector or adapter without gradients, and plain
        DDP (no ``find_unused_parameters``, or ``static_graph``) hangs when ranks disagree on that set.
        Costs one sum per tensor of these small parts."""
        parts = [self.codebook_embed, self.speaker_proj]
        parts += [self.code0_head, self.code_heads] if self.shared is None else []  # shared: the backbone's lm_head
        parts += [self.adapter] if self.audio_encoder is not None else []
        terms = [p.sum() for m in parts for p in m.parameters() if p.requires_grad]
        return torch.stack(terms).sum() * 0.0 if terms else self.codebook_embed.weight.new_zeros(())

    def loss(self, batch: dict) -> LossOutput:
        """Paper Eq. 2-3. Position t predicts the content of t+1 where ``target_mask[t+1]``;
        a text target costs its CE, an audio target the mean CE of its C codebooks."""
        hidden = self.hidden_states(batch)
        mask = batch["target_mask"][:, 1:]
        h = hidden[:, :-1][mask]  # only supervised positions reach the (large) heads
        next_ids = batch["input_ids"][:, 1:][mask]
        next_codes = batch["codes"][:, 1:][mask]
        is_audio = next_codes[:, 0] >= 0
        if self.shared is None:
            target0 = torch.where(is_audio, self.text_vocab + next_codes[:, 0], next_ids)
            logits0 = self.head0_logits(h).float()
        else:  # one lm_head pass serves head 0 and the codebook slices
            target0 = torch.where(is_audio, self.shared.code0_class(next_codes[:, 0]), self.shared.text_class(next_ids))
            lm = self.backbone.get_output_embeddings()(h)
            logits0 = self.shared.head0(lm).float()
        ce0 = F.cross_entropy(logits0, target0, reduction="none")
        correct0 = logits0.argmax(-1) == target0

        # the small codebook heads run on every supervised position and text positions are weighted
        # out: cheaper than selecting the audio ones, which would read a count on the host each step
        audio = is_audio.float()
        num_audio, num_text = audio.sum(), (1 - audio).sum()
        rest = self.code_logits(h) if self.shared is None else self.shared.codes(lm)
        logits_rest = rest.float()  # [N, C-1, K]
        targets_rest = torch.where(is_audio[:, None], next_codes[:, 1:], 0)
        ce_rest = F.cross_entropy(logits_rest.transpose(1, 2), targets_rest, reduction="none")  # [N, C-1]
        ce_all = torch.cat([ce0[:, None], ce_rest], dim=1)  # [N, C]
        per_position = torch.where(is_audio, ce_all.mean(1), ce0)
        correct_all = torch.cat([correct0[:, None], logits_rest.argmax(-1) == targets_rest], 1).float()
        per_audio, per_text = audio / num_audio.clamp(min=1), (1 - audio) / num_text.clamp(min=1)
        loss = per_position.mean() if len(per_position) else hidden.sum() * 0.0 + self.head0_logits(hidden[:, :1]).sum() * 0.0
        if self.config.loss == "official" and len(per_position):
            # the release's compute_xy_loss: mean CE of text + codebook 0 over all targets, plus the mean over
            # codebooks 1..C-1 of their mean CE at audio targets (equal counts: one mean over [A, C-1])
            loss = ce0.mean() + (ce_rest.mean(1) * per_audio).sum()
        return LossOutput(
            loss=loss + self._untouched_zero(),
            text_loss=(per_position * per_text).sum().detach(),
            audio_loss=(per_position * per_audio).sum().detach(),
            codebook_loss=(ce_all * per_audio[:, None]).sum(0).detach(),
            codebook_correct=(correct_all * audio[:, None]).sum(0),
            text_correct=(correct0.float() * (1 - audio)).sum(),
            num_text=num_text,
            num_audio=num_audio,
        )
