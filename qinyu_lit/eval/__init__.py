"""Evaluation: the paper's metrics on validation / test batches (``metrics.py``)."""

from .metrics import (
    GenerationMetrics,
    Reference,
    frames_per_text_token,
    normalize_text,
    per_task_losses,
    split_batch,
)

__all__ = [
    "GenerationMetrics",
    "Reference",
    "frames_per_text_token",
    "normalize_text",
    "per_task_losses",
    "split_batch",
]
