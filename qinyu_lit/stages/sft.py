"""Stage 2, supervised fine-tuning (paper Appendix C).

Trains: the audio adapter, the speaker projector, the whole LLM with its audio parts
(codebook embeddings, codebook-0 head extension, codebook heads 1-7).
Frozen: the audio encoder.
Data: conversation, role-play and singing dialogues plus some pretraining data;
8K steps, LR 6e-5 (official scripts: 12K steps, 5e-5, weight decay 0.1), 1.28M tokens a step.
"""

from __future__ import annotations

from .base import QinYuStage


class SFTStage(QinYuStage):
    TRAINABLE = ("adapter.*", "speaker_proj.*", "backbone.*", "codebook_embed.*", "code0_head.*", "code_heads.*")
