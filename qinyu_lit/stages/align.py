"""Stage 0, modality alignment (paper Appendix C).

Trains: the audio adapter (LayerNorm + Linear-GELU-Linear) - optionally also the embedding rows of the
QinYu special tokens (``train_token_rows``), through a peft ``TrainableTokensConfig`` delta, because
``requires_grad`` on a slice of the embedding matrix does nothing.
Frozen: the audio encoder and the whole LLM.
Data: speech in -> text out (ASR, speech QA), ~10% of the pretraining data;
500 steps (official scripts: 2000), LR 1e-3, 1.28M tokens a step.
"""

from __future__ import annotations

from ..model.config import QinYuConfig
from .base import QinYuStage


def qinyu_token_ids(model) -> list[int]:
    """Ids of the chat and QinYu special tokens: rows a stage may train while the LLM stays frozen."""
    ids = model.ids
    return sorted(
        {
            ids.im_start,
            ids.im_end,
            ids.audio_start,
            ids.audio_end,
            ids.audio,
            ids.speaker,
            ids.user_speaker,
            ids.frame,
        }
    )


class AlignStage(QinYuStage):
    """Stage 0: align the audio encoder's output with the LLM input space by training the adapter.

    Args:
        net: what to build; see ``QinYuConfig``.
        optimizer: optimizer factory (paper: AdamW, LR 1e-3, betas (0.9, 0.95)).
        warmup_ratio: share of the run in linear warmup (paper: 3%).
        trainable: parameter-name patterns that train; ``None`` keeps this stage's policy.
        init_from: checkpoint or exported directory to start from (usually ``None`` for stage 0).
        train_token_rows: also train the embedding rows of the special tokens (``<|audio_start|>`` ...),
            useful when a pretrained backbone meets them for the first time; off in the paper.
    """

    TRAINABLE = ("adapter.*",)

    def __init__(
        self,
        net: QinYuConfig,
        trainable: list[str] | None = None,
        train_token_rows: bool = False,
        **kwargs,  # everything else of QinYuStage (optimizer, init_from, validation options, ...)
    ):
        if trainable is None and train_token_rows:
            trainable = [*self.TRAINABLE, "backbone.*trainable_tokens_delta*"]
        super().__init__(net, trainable=trainable, **kwargs)
        self.train_token_rows = train_token_rows

    def adapt_model(self) -> None:
        if self.train_token_rows:
            from peft import TrainableTokensConfig, get_peft_model

            embed = self.model.backbone.get_input_embeddings()
            name = next(n for n, m in self.model.backbone.named_modules() if m is embed).rpartition(".")[2]
            config = TrainableTokensConfig(target_modules=[name], token_indices=qinyu_token_ids(self.model))
            self.model.backbone = get_peft_model(self.model.backbone, config)
