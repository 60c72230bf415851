"""The mining similarity plot: guide similarity of (query, pos) and (query, neg), one PNG per task."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

from pipeline.common.atomic import atomic_path


def similarity_histogram(pos_score: np.ndarray, neg_score: np.ndarray, title: str, path: Path) -> Path:
    """Write the two distributions as overlaid histograms (atomically) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    bins = np.linspace(-0.2, 1.0, 61)
    ax.hist(pos_score, bins=bins, alpha=0.6, label=f"(query, pos) n={len(pos_score)}")
    ax.hist(neg_score, bins=bins, alpha=0.6, label=f"(query, neg) n={len(neg_score)}")
    ax.set_xlabel("guide cosine similarity")
    ax.set_ylabel("triplets")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
    return path


def png_markdown(path: Path) -> str:
    """The PNG inlined as markdown, so the Dagster UI shows it in the asset's metadata."""
    return f"![similarity](data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()})"
