"""Stage 3 (optional), a custom character: LoRA fine-tuning on one persona's dialogues and voice.

Trains: peft LoRA matrices on the LLM's ``target_modules``; the codebook heads, the audio-token
embeddings and the special-token rows only when asked (``train_heads``, ``train_audio_embeddings``,
``train_token_rows`` - the latter through peft ``trainable_token_indices``, never a slice).
Frozen: everything else, so one base serves many personas (``qinyu_lit.persona_bank.PersonaBank``).
Data: persona shards from ``qinyu-lit persona-data`` (system prompt from the profile, agent voice =
mean embedding over the character's clips); a few hundred steps. Starts from the SFT checkpoint.
"""

from __future__ import annotations

import json

from ..model.config import QinYuConfig
from .align import qinyu_token_ids
from .base import QinYuStage

LLAMA_STYLE_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class PersonaStage(QinYuStage):
    """Stage 3: LoRA on the backbone for one character.

    Args:
        net: what to build; must match the SFT checkpoint in ``init_from``.
        optimizer: optimizer factory (AdamW; LoRA usually takes LR 1e-4 .. 2e-4).
        warmup_ratio: share of the run in linear warmup.
        trainable: parameter-name patterns that train; ``None`` derives them from the switches below.
        init_from: the SFT checkpoint or exported directory the persona adapts.
        persona_card: ``persona.json`` written by ``qinyu-lit persona-data``; stored in the checkpoint
            so the adapter directory carries the system prompt and the voice.
        lora_r: LoRA rank.
        lora_alpha: LoRA scale numerator (update scaled by ``lora_alpha / lora_r``).
        lora_dropout: dropout on the LoRA input.
        target_modules: module names that get LoRA (Qwen3 / Llama names by default).
        train_heads: also train the codebook-0 head extension and the codebook heads 1..7 (separate heads only;
            with ``heads: shared`` put ``lm_head`` in ``target_modules``).
        train_audio_embeddings: also train the codebook embeddings (audio-token input rows).
        train_token_rows: also train the special-token embedding rows (peft ``trainable_token_indices``).
    """

    def __init__(
        self,
        net: QinYuConfig,
        trainable: list[str] | None = None,
        persona_card: str | None = None,
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.05,
        target_modules: list[str] = LLAMA_STYLE_PROJECTIONS,  # noqa: B006 - shown in --help
        train_heads: bool = False,
        train_audio_embeddings: bool = False,
        train_token_rows: bool = False,
        **kwargs,  # everything else of QinYuStage (optimizer, init_from, validation options, ...)
    ):
        if train_heads and net.heads == "shared":
            raise ValueError(
                "model.init_args.train_heads: with net.heads: shared the codebook heads are rows of the backbone's "
                "lm_head; add lm_head to model.init_args.target_modules (LoRA on the one head) instead"
            )
        if trainable is None:
            trainable = ["backbone.*lora_A.*", "backbone.*lora_B.*"]
            trainable += ["code0_head.*", "code_heads.*"] if train_heads else []
            trainable += ["codebook_embed.*"] if train_audio_embeddings else []
            trainable += ["backbone.*trainable_tokens_delta*"] if train_token_rows else []
        super().__init__(net, trainable=trainable, **kwargs)
        self.lora = dict(
            r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, target_modules=list(target_modules)
        )
        self.train_token_rows = train_token_rows
        self.persona_card = json.loads(open(persona_card).read()) if persona_card else None

    def adapt_model(self) -> None:
        from peft import LoraConfig, get_peft_model

        tokens = qinyu_token_ids(self.model) if self.train_token_rows else None
        config = LoraConfig(**self.lora, trainable_token_indices=tokens)
        self.model.backbone = get_peft_model(self.model.backbone, config)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.persona_card is not None:
            checkpoint["qinyu_persona"] = self.persona_card  # plain dict: loads with weights_only=True
