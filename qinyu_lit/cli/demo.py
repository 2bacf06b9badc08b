"""``qinyu-lit demo-data``: the deterministic demo corpus the tiny recipes train on."""

from __future__ import annotations


def demo_data(
    out_dir: str = "data/demo",
    samples_per_task: int = 384,
    val_samples_per_task: int = 4,
    speaker_dim: int = 16,
    codebook_size: int = 64,
    seed: int = 0,
) -> None:
    """Write the deterministic demo corpus (every task type) and its tokenizer.

    Args:
        out_dir: where ``train/``, ``val/`` and ``tokenizer/`` go.
        samples_per_task: training samples for each of the 7 task types.
        val_samples_per_task: validation samples for each task type.
        speaker_dim: speaker embedding size of the demo voices.
        codebook_size: codes per codebook of the demo code rule (8 codebooks).
        seed: corpus seed; the same seed gives byte-identical shards.
    """
    from ..prep.demo import make_demo_corpus

    path = make_demo_corpus(
        out_dir,
        samples_per_task=samples_per_task,
        val_samples_per_task=val_samples_per_task,
        speaker_dim=speaker_dim,
        codebook_size=codebook_size,
        seed=seed,
    )
    print(f"demo corpus written to {path} (train/, val/, tokenizer/)")
