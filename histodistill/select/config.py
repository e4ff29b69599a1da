"""The selection's configuration (notebook 04): method, graph, ranking and IPC; each profile's
values are in `presets.py`."""

from __future__ import annotations

from dataclasses import dataclass


SELECTION_METHODS = ("infodist", "random", "kmeans", "umap_kmeans", "herding")


@dataclass(frozen=True)
class SelectionConfig:
    """How the distilled set is picked from the pool (notebook 04)."""

    method: str = "infodist"  # infodist | random | kmeans | umap_kmeans | herding
    ipc: int = 10  # images kept per class
    embedding: str = "convnet"  # convnet: the real-trained ConvNet's features; umap: UMAP of raw pixels
    graph: str = "knn"  # infodist: knn (sparse, scales) | paper (the released code's) | umap
    rank: str = "centrality"  # infodist: order inside a module, modular centrality or flow
    k: int = 10  # knn graph: neighbours per image
    # The released code's scale is 1.0: its rows are nearly uniform (one module per class at
    # ~200 images) and from ~1000 images per class the graph is empty (refused); use knn.
    distance_scale: float = 1.0  # paper graph: inverse temperature of its softmax over 1/distance
    trials: int = 5  # Infomap trials (the best is kept)
    seed: int = 0  # seed of Infomap, k-means, UMAP and random selection
    # Drop every pool image the calibrated near-copy test flags (in pixels or in the judge's
    # features, thresholds from real val) before any graph is built (`select/privacy_filter.py`).
    privacy_filter: bool = False

    def __post_init__(self) -> None:
        if self.method not in SELECTION_METHODS:
            raise ValueError(f"selection method {self.method!r} is not one of {SELECTION_METHODS}")
        if self.embedding not in ("convnet", "umap"):
            raise ValueError("embedding must be 'convnet' or 'umap'")
        if self.graph not in ("knn", "paper", "umap"):
            raise ValueError("graph must be 'knn', 'paper' or 'umap'")
        if self.rank not in ("centrality", "flow"):
            raise ValueError("rank must be 'centrality' or 'flow'")
        if self.ipc < 1 or self.k < 1 or self.trials < 1:
            raise ValueError("ipc, k and trials must be positive")
        if isinstance(self.distance_scale, bool) or not isinstance(self.distance_scale, (int, float)) \
                or not self.distance_scale > 0:
            raise ValueError(f"distance_scale must be a positive number, not {self.distance_scale!r}")
