"""Core-Cocktail merging (Fun-Audio-Chat): ``M = alpha * M1 + (1 - alpha) * M0``, ``qinyu-lit merge``.

M0 (``--base``) is the original model: a qinyu-lit export, a ``.ckpt``, or a plain Hugging Face causal
LM directory (the original LLM itself, e.g. Qwen3-8B). M1 (``--tuned``) is the stage-1 result (export or
``.ckpt``, LoRA merged). What M0 lacks - the adapter, audio heads and codebook embeddings, the speaker
projector, new token rows of the embedding / LM head - comes from M1 unchanged. Each tensor keeps M1's
dtype; the blend is computed in float32 (float64 stays float64), so alpha 0 gives M0 and alpha 1 gives M1
bit for bit. The result is an exported directory (``init_from`` and ``QinYuModel.from_pretrained`` load it).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.errors import QinYuError
from ..model.qinyu import QinYuModel
from ..model.weights import CONFIG_NAME, plain_model, save_exported
from .checkpoints import stage_from_checkpoint


def load_any(path: str | Path) -> QinYuModel:
    """An exported directory or a Lightning checkpoint -> a plain ``QinYuModel`` (LoRA merged)."""
    path = Path(path)
    if path.is_dir():
        return QinYuModel.from_pretrained(path)
    if path.is_file():
        return plain_model(stage_from_checkpoint(path).model)
    raise QinYuError(f"{path}: neither a checkpoint file nor an exported directory")


def base_state(path: str | Path) -> dict[str, torch.Tensor]:
    """M0's tensors under QinYu names: a QinYu model's state dict, or a plain LLM's as ``backbone.*``."""
    path = Path(path)
    if path.is_dir() and not (path / CONFIG_NAME).is_file() and (path / "config.json").is_file():
        from transformers import AutoModelForCausalLM

        llm = AutoModelForCausalLM.from_pretrained(path, torch_dtype="auto")
        return {f"backbone.{k}": v for k, v in llm.state_dict().items()}
    return load_any(path).state_dict()


def _blend(base: torch.Tensor, tuned: torch.Tensor, alpha: float) -> torch.Tensor:
    # exact multipliers 0 and 1 in a float32 (or wider) computation: the ends reproduce each model exactly
    wide = torch.promote_types(tuned.dtype, torch.float32)
    mixed = alpha * tuned.to(wide) + (1.0 - alpha) * base.to(wide)
    return mixed.to(tuned.dtype)


def vocabulary_tables(model: QinYuModel) -> set[str]:
    """State-dict names of the backbone's token embedding and LM head (the tables new tokens grow)."""
    tables = {model.backbone.get_input_embeddings().weight, model.backbone.get_output_embeddings().weight}
    return {f"backbone.{n}" for n, p in model.backbone.named_parameters() if any(p is t for t in tables)}


def merge_states(base: dict, tuned: dict, alpha: float, tables: set[str] = frozenset()) -> tuple[dict, dict[str, int]]:
    """Blend every floating tensor M0 and M1 share; the rest is M1's. Returns (state, counts).

    A shared tensor of another shape is an error naming it, except new rows of a vocabulary table in
    ``tables`` (grown by the QinYu special tokens): M0's rows are blended, the new rows are M1's.
    """
    if not 0.0 <= alpha <= 1.0:
        raise QinYuError(f"--alpha {alpha}: must lie in [0, 1] (0 = the base model, 1 = the tuned model)")
    merged, counts = {}, {"blended": 0, "from_tuned": 0, "grown_rows": 0}
    for key, t in tuned.items():
        b = base.get(key)
        if b is None or not t.is_floating_point():
            merged[key], counts["from_tuned"] = t, counts["from_tuned"] + 1
            continue
        if b.shape == t.shape:
            merged[key] = _blend(b, t, alpha)
        elif key in tables and b.ndim == 2 and b.shape[1:] == t.shape[1:] and b.shape[0] < t.shape[0]:
            n = b.shape[0]
            merged[key] = torch.cat([_blend(b, t[:n], alpha), t[n:]])
            counts["grown_rows"] += 1
        else:
            raise QinYuError(
                f"{key}: shape {tuple(b.shape)} in the base but {tuple(t.shape)} in the tuned model; "
                "merge models of the same architecture (the tuned one trained from the base)"
            )
        counts["blended"] += 1
    return merged, counts


def merge_cmd(*, base: str, tuned: str, out: str, alpha: float = 0.5) -> None:
    """Core-Cocktail merge: ``alpha * tuned + (1 - alpha) * base``, written as an exported directory.

    Args:
        base: M0, the model before stage 1: an export directory, a ``.ckpt``, or a plain Hugging Face
            causal-LM directory (the original LLM).
        tuned: M1, the stage-1 result: an export directory or a ``.ckpt`` (a LoRA is merged first).
        out: the export directory to write (``init_from`` of stage 2 takes it).
        alpha: weight of the tuned model, in [0, 1] (Fun-Audio-Chat: 0.5).
    """
    if not 0.0 <= alpha <= 1.0:  # before minutes of loading
        raise QinYuError(f"--alpha {alpha}: must lie in [0, 1] (0 = the base model, 1 = the tuned model)")
    for flag, path in (("--base", base), ("--tuned", tuned)):
        if not Path(path).exists():
            raise QinYuError(f"{flag} {path}: no such checkpoint or directory")
    model = load_any(tuned)
    state, counts = merge_states(base_state(base), model.state_dict(), alpha, vocabulary_tables(model))
    model.load_state_dict(state)
    path = save_exported(model, out)
    print(f"merged (alpha={alpha}) into {path}: {counts['blended']} tensors blended "
          f"({counts['grown_rows']} with new rows from the tuned model), {counts['from_tuned']} from the tuned model")
