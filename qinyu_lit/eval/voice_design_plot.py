"""VoiceDesign's validation picture: sampled and true speaker embeddings projected to 2-D (PCA).

The projection is fitted on the true embeddings, so a well-trained model's guided samples land on the
true clusters and its unconditional ones spread over all of them. Returned as a matplotlib figure for
TensorBoard (``add_figure``) or a notebook.
"""

from __future__ import annotations

import numpy as np


def pca_2d(reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, [D, 2] axes) of the two principal directions of ``reference [N, D]``."""
    mean = reference.mean(0)
    _, _, vt = np.linalg.svd(reference - mean, full_matrices=False)
    return mean, vt[:2].T


def projection_figure(points: dict[str, np.ndarray], title: str = "speaker embeddings, PCA of the true ones"):
    """A scatter of every ``name -> [N, D]`` array on the true embeddings' (``points["true"]``) PCA plane."""
    from matplotlib.figure import Figure  # not pyplot: no backend or display needed (training runs headless)

    mean, axes = pca_2d(points["true"])
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot()
    for (name, pts), marker in zip(points.items(), "o^xs+", strict=False):
        xy = (pts - mean) @ axes
        ax.scatter(xy[:, 0], xy[:, 1], s=14, marker=marker, label=name, alpha=0.7)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
