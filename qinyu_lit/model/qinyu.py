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
``position_ids`` that restart per packed sample. The sample boundaries reach attention from the
collate's host-side facts (``batch["pack"]``: ``cu_seqlens`` for varlen/flash, a block-diagonal mask
built on the device for sdpa; ``model/attention.py``), and every placeholder, supervised position and
count comes from there too: a training forward and loss read nothing back from the device
(tests/model/test_no_host_reads.py). ``use_cache=False`` in training: with a cache present transformers
skips the packed-sequence detection and attention would leak across samples (a batch without ``pack``,
built by hand, still works: ``with_pack`` derives the facts, reading the device).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.batch import pack_metadata
from ..data.delay import num_pad_ids
from ..data.tokenizer import load_tokenizer, special_ids
from .attention import cu_seqlens_from_position_ids, packed_attention_kwargs, without_mask_skip
from .chunked_loss import chunked_head_ce
from .config import QinYuConfig
from .encoders import build_audio_encoder, build_backbone, encoder_width, run_audio_encoder
from .heads import SharedHeads
from .weights import load_exported_parts, read_exported_config, save_exported


@dataclass
class LossOutput:
    loss: torch.Tensor  # Eq. 3 averaged over supervised positions (``loss: official``: the release's sum)
    loss_sum: torch.Tensor  # the per-position terms summed (``loss_normalization: tokens`` divides it later)
    num_targets: int  # supervised positions (host int, from the collate)
    text_loss: torch.Tensor  # CE over text-target positions
    audio_loss: torch.Tensor  # mean-of-8 CE over audio-target positions
    codebook_loss: torch.Tensor  # [C] mean CE of each codebook over audio positions
    codebook_correct: torch.Tensor  # [C] correct argmax count per codebook
    text_correct: torch.Tensor  # correct argmax count over text positions
    num_text: int  # text-target positions (host int, from the collate: no device read)
    num_audio: int  # audio-target positions


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
            without_mask_skip(self.audio_encoder)  # its padding mask without a host read
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
        return load_exported_parts(cls(read_exported_config(path, dtype)), path)

    def save_pretrained(self, path: str):
        """Backbone in Hugging Face format (any LoRA merged in), QinYu parts in safetensors, their config."""
        return save_exported(self, path)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.audio_encoder is not None:  # frozen: no dropout unless ``encoder_dropout_in_training``
            self.audio_encoder.train(mode and self.config.encoder_dropout_in_training)
        return self

    # ------------------------------------------------------------------ inputs

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """[..., C] codes -> [..., H]: the mean of the C codebook embeddings (paper: averaged input)."""
        return self.codebook_embed(codes + self.code_offsets).mean(-2)

    def embed_inputs(self, batch: dict) -> torch.Tensor:
        """Placeholders swapped for their embeddings, at positions the collate found on the host
        (``batch["pack"]``): frames by index, speakers and user speech by their host-known counts."""
        batch = with_pack(batch)
        ids, codes, pack = batch["input_ids"], batch["codes"], batch["pack"]
        embeds = self.backbone.get_input_embeddings()(ids)
        flat = embeds.reshape(-1, embeds.shape[-1])
        frames = pack["frame_index"]
        if frames.numel():
            frame_codes = codes.reshape(-1, codes.shape[-1]).index_select(0, frames)
            flat = flat.index_copy(0, frames, self.embed_codes(frame_codes).to(flat.dtype))
        num_speakers = batch["speakers"].shape[0] if "speakers" in batch else 0  # one per placeholder: a host-side shape
        if num_speakers:
            spk = batch["speakers"].to(embeds.device, next(self.speaker_proj.parameters()).dtype)
            if spk.shape[-1] != self.config.speaker_dim:
                raise ValueError(
                    f"speaker embeddings of shape {tuple(spk.shape)}; the model expects dimension "
                    f"{self.config.speaker_dim} (model.net.speaker_dim)"
                )
            where = positions_of((ids == self.ids.speaker) | (ids == self.ids.user_speaker), num_speakers)
            flat = flat.index_copy(0, where, self.speaker_proj(spk).to(flat.dtype))
        if pack["clip_frames"]:
            if self.audio_encoder is None:
                raise ValueError("the batch holds user speech but the model has no audio encoder (model.net.audio_encoder)")
            audio = self.encode_audio(batch["audio_features"], batch["audio_feature_lens"], pack["clip_frames"])
            flat = flat.index_copy(0, positions_of(ids == self.ids.audio, audio.shape[0]), audio.to(flat.dtype))
        return flat.view_as(embeds)

    def encode_audio(self, features: torch.Tensor, lens: torch.Tensor, host_lens: list[int] | None = None) -> torch.Tensor:
        """Frozen encoder (no graph kept) + trainable adapter -> [sum of frames, H]. ``host_lens``: the clips'
        frame counts on the host (collate's ``clip_frames``); without them they are read from ``lens`` (a sync)."""
        if self.audio_encoder.training != (self.training and self.config.encoder_dropout_in_training):
            # Lightning restores each submodule's own train/eval flag (undoing ``train()`` below); the frozen
            # encoder runs its dropout only where asked (the release's behaviour), so the model enforces it here
            self.audio_encoder.train(self.training and self.config.encoder_dropout_in_training)
        enc_dtype = next(self.audio_encoder.parameters()).dtype
        host_lens = lens.tolist() if host_lens is None else host_lens
        with torch.no_grad():
            per_clip = run_audio_encoder(
                self.audio_encoder, features.to(enc_dtype), lens, self.config.audio_encoder_type, host_lens
            )
        return self.adapter(torch.cat(per_clip).to(self.adapter[1].weight.dtype))

    # ------------------------------------------------------------------ forward

    def hidden_states(self, batch: dict, **kwargs) -> torch.Tensor:
        batch = with_pack(batch)
        decoder = self.backbone.get_decoder()
        # the packed-attention inputs (boundaries or the block mask) once per forward, for every layer
        pack = batch["pack"]
        kwargs = {**packed_attention_kwargs(decoder.config, batch["position_ids"], pack["cu_seqlens"], pack["max_seqlen"]), **kwargs}
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

    def forward(self, batch: dict, output: str = "loss"):
        """``loss``: the Eq. 3 ``LossOutput``; ``position_logprobs``: ``position_logprobs(batch)`` (DPO).
        Stages call the model (not its methods) so that FSDP and DDP hooks run."""
        if output == "position_logprobs":
            return self.position_logprobs(batch)
        if output != "loss":
            raise ValueError(f"output must be 'loss' or 'position_logprobs', got {output!r}")
        return self.loss(batch)

    def position_logprobs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-probability of each supervised target ([N] fp32: a text token's, or the mean of a frame's C
        codes' as Eq. 3 averages their CEs) and the sequence it is in ([N], index into ``cu_seqlens``)."""
        batch = with_pack(batch)
        pack = batch["pack"]
        ce, _ = self.target_ce(self.hidden_states(batch), pack)
        logp = -torch.where(pack["is_audio"], ce.mean(1), ce[:, 0])
        return logp + self._untouched_zero(), pack["sup_segment"]

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

    def _head_logits(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of hidden states -> (head-0 logits, codebook 1..C-1 logits); shared: one lm_head pass for both."""
        if self.shared is None:
            return self.head0_logits(h), self.code_logits(h)
        lm = self.backbone.get_output_embeddings()(h)
        return self.shared.head0(lm), self.shared.codes(lm)

    def loss(self, batch: dict) -> LossOutput:
        """Paper Eq. 2-3. Position t predicts the content of t+1 where ``target_mask[t+1]``;
        a text target costs its CE, an audio target the mean CE of its C codebooks."""
        batch = with_pack(batch)
        return self.loss_from_hidden(self.hidden_states(batch), batch["pack"])

    def target_ce(self, hidden: torch.Tensor, pack: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE [N, C] fp32, correct [N, C]) of every supervised position (``pack``'s order): column 0 is
        head 0 (a text token or codebook 0), 1.. the codebook heads (meaningless at text positions)."""
        h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, pack["sup_index"])  # only these reach the heads
        next_codes, is_audio = pack["next_codes"], pack["is_audio"]
        if self.shared is None:
            target0 = torch.where(is_audio, self.text_vocab + next_codes[:, 0], pack["next_ids"])
        else:
            target0 = torch.where(is_audio, self.shared.code0_class(next_codes[:, 0]), self.shared.text_class(pack["next_ids"]))
        # the small codebook heads run on every supervised position and text positions are weighted out
        targets_rest = torch.where(is_audio[:, None], next_codes[:, 1:], 0)
        return chunked_head_ce(self._head_logits, h, target0, targets_rest, self.config.loss_chunk_size)

    def loss_from_hidden(self, hidden: torch.Tensor, pack: dict) -> LossOutput:
        """The loss of the decoder's output at the supervised positions the collate listed (``pack``).
        Counts are host ints and positions index tensors: no device value is read back here."""
        ce_all, correct = self.target_ce(hidden, pack)
        is_audio = pack["is_audio"]
        n, num_audio, num_text = ce_all.shape[0], pack["num_audio"], pack["num_text"]
        audio = is_audio.to(ce_all.dtype)
        per_position = torch.where(is_audio, ce_all.mean(1), ce_all[:, 0])
        per_audio, per_text = audio / max(num_audio, 1), (1 - audio) / max(num_text, 1)
        loss_sum = per_position.sum()
        if n == 0:  # nothing supervised: a zero that still reaches every head (DDP needs the same graph)
            loss = hidden.sum() * 0.0 + self.head0_logits(hidden[:, :1]).sum() * 0.0
        elif self.config.loss == "official":
            # the release's compute_xy_loss: mean CE of text + codebook 0 over all targets, plus the mean over
            # codebooks 1..C-1 of their mean CE at audio targets (equal counts: one mean over [A, C-1])
            loss = ce_all[:, 0].mean() + (ce_all[:, 1:].mean(1) * per_audio).sum()
            loss_sum = ce_all[:, 0].sum() + (ce_all[:, 1:].mean(1) * audio).sum()
        else:
            loss = loss_sum / n
        return LossOutput(
            loss=loss + self._untouched_zero(),
            loss_sum=loss_sum + self._untouched_zero(),
            num_targets=n,
            text_loss=(per_position * per_text).sum().detach(),
            audio_loss=(per_position * per_audio).sum().detach(),
            codebook_loss=(ce_all * per_audio[:, None]).sum(0).detach(),
            codebook_correct=(correct.float() * audio[:, None]).sum(0),
            text_correct=(correct[:, 0].float() * (1 - audio)).sum(),
            num_text=num_text,
            num_audio=num_audio,
        )


def positions_of(mask: torch.Tensor, count: int) -> torch.Tensor:
    """Flat indices of the ``count`` True entries of ``mask``, in order, without reading the device:
    ``nonzero`` would have to learn its output size from the device (a sync); here the size is known
    on the host (from the batch's shapes), so each True entry scatters its own index into its slot."""
    flat = mask.reshape(-1)
    slot = torch.where(flat, flat.cumsum(0) - 1, count)  # False entries all go to the spare last slot
    out = torch.zeros(count + 1, dtype=torch.long, device=mask.device)
    return out.scatter_(0, slot, torch.arange(flat.numel(), device=mask.device))[:count]


def with_pack(batch: dict) -> dict:
    """A batch with its host-side pack facts: collate's (``batch["pack"]``), or for a batch put
    together by hand (tests, generation) derived here from its tensors, which reads them to the host.
    A batch edited after collate must drop its ``pack`` (a change of shape is noticed here)."""
    if "pack" in batch and tuple(batch["pack"]["shape"]) == tuple(batch["input_ids"].shape):
        return batch
    ids = batch["input_ids"].cpu()
    cu, _ = cu_seqlens_from_position_ids(batch["position_ids"].cpu())
    lens, mask = batch.get("audio_feature_lens"), batch.get("target_mask")
    mask = torch.zeros_like(ids, dtype=torch.bool) if mask is None else mask.cpu()
    clips = [] if lens is None else lens.tolist()
    meta = pack_metadata(ids, batch["codes"].cpu(), mask, [torch.diff(cu).tolist()], clips)
    device = batch["input_ids"].device
    return {**batch, "pack": {k: v.to(device) if torch.is_tensor(v) else v for k, v in meta.items()}}
