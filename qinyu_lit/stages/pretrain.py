"""Stage 1, pretraining (paper Appendix C).

Trains: the audio adapter, the speaker projector, the whole LLM with its audio parts
(codebook embeddings, codebook-0 head extension, codebook heads 1-7).
Frozen: the audio encoder.
Data: the full ASR, TTS, speech-QA and text mixture (VITA-Audio Table 2 ratios);
8K steps, LR 6e-5, 2.56M tokens a step. Starts from the stage-0 checkpoint (``init_from``).
"""

from __future__ import annotations

from .base import QinYuStage


class PretrainStage(QinYuStage):
    TRAINABLE = (
        "adapter.*",
        "speaker_proj.*",
        "backbone.*",
        "codebook_embed.*",
        "code0_head.*",
        "code_heads.*",
    )
