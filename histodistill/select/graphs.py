"""Per-class similarity graphs over embeddings, the input to InfoDist's Infomap step.

    >>> from histodistill.select import graphs
    >>> g = graphs.build_graph(class_features, "knn", k=10)      # sparse, symmetric
    >>> g = graphs.build_graph(class_features, "paper")             # the released code's
    >>> g.weights, g.directed, g.diagnostics()

Kinds (`GRAPH_KINDS`):

- ``paper``: the released code's graph. Directed; row i is a softmax over j != i of
  ``distance_scale / d(i, j)``; weights below `threshold` (0.001) are dropped. With the
  faithful ``distance_scale=1`` and feature distances of tens, 1/d barely varies, every row
  is nearly uniform (each weight ~ 1/(N-1)) and for N > 1001 nothing survives the threshold:
  the released code then ran Infomap on an empty graph without noticing. Here that raises
  `GraphError`, which names the remedy: the ``knn`` graph, which keeps a fixed number of
  neighbours per image and so finds the same modules as a class grows.
- ``knn``: a sparse symmetric k-nearest-neighbour graph with locally scaled Gaussian weights.
- ``umap``: UMAP's own fuzzy neighbour graph (``umap.umap_.fuzzy_simplicial_set``).

Features are float arrays (N, D), one class at a time. `umap_embedding` is the UMAP variant
of the paper (pixels or features to 10 dimensions).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.neighbors import NearestNeighbors

# Distances are clamped at this fraction of the data's typical distance, so exact duplicates
# (d = 0) give a large finite 1/d instead of inf, without moving any real distance.
RELATIVE_EPS = 1e-6
# Bytes of one dense block of the paper graph (rows x N float64), so memory stays bounded.
PAPER_BLOCK_BYTES = 64 * 2**20


class GraphError(ValueError):
    """A graph too empty to carry structure. The message names the cause and the remedy."""


class GraphWarning(UserWarning):
    """A graph that was built but carries little structure (e.g. near-uniform rows)."""


@dataclass
class GraphResult:
    weights: sp.csr_matrix  # (N, N); row i holds the out-links of node i
    directed: bool
    kind: str
    params: dict
    warnings: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # kind-specific numbers, e.g. the scale used

    @property
    def n_nodes(self) -> int:
        return self.weights.shape[0]

    @property
    def n_edges(self) -> int:
        """Directed: stored links. Undirected: unordered pairs (each stored twice)."""
        w = self.weights
        return int(w.nnz if self.directed else sp.triu(w, k=1).nnz)

    @property
    def isolated_share(self) -> float:
        """Share of nodes without any out-link (for undirected graphs: without any link)."""
        if self.n_nodes == 0:
            return 0.0
        return float(np.mean(np.diff(self.weights.indptr) == 0))

    def diagnostics(self) -> dict:
        return {"kind": self.kind, "directed": self.directed, "n_nodes": self.n_nodes,
                "n_edges": self.n_edges, "isolated_share": self.isolated_share,
                **self.extra, "warnings": list(self.warnings)}


def build_graph(features: np.ndarray, kind: str = "knn", **params) -> GraphResult:
    """Build the graph `kind` ("paper", "knn" or "umap") over `features` (N, D)."""
    if kind not in GRAPH_KINDS:
        raise ValueError(f"unknown graph kind {kind!r}; choose one of {sorted(GRAPH_KINDS)}")
    return GRAPH_KINDS[kind](features, **params)


# --- the released code's graph -----------------------------------------------------------


def paper_graph(
    features: np.ndarray,
    threshold: float = 1e-3,
    distance_scale: float = 1.0,
    max_isolated_share: float = 0.5,
    on_empty: str = "raise",
) -> GraphResult:
    """Directed graph with ``w_ij = softmax_j(distance_scale / d_ij)`` over j != i, weights
    below `threshold` dropped; the rest are not renormalised (Infomap normalises a directed
    node's out-links itself).

    ``distance_scale`` multiplies 1/d, i.e. it is the softmax's inverse temperature; ``1.0``
    is the faithful setting. The rows' median perplexity (2**entropy, the effective number
    of neighbours) is recorded, and a nearly uniform graph is reported.

    Duplicates: distances are clamped at 1e-6 times the typical distance, so an exact copy
    gets a large finite logit and the copies of a row share (almost) all its weight, the
    d -> 0 limit of the softmax; no inf or NaN.

    When more than `max_isolated_share` of the nodes have no out-link left, the graph is
    reported: ``on_empty="raise"`` raises `GraphError`, ``"warn"`` warns and returns it.
    Memory: one block of rows at a time (`PAPER_BLOCK_BYTES`), plus the links kept.
    """
    x = _as_features(features).astype(np.float64, copy=False)
    if on_empty not in ("raise", "warn"):
        raise ValueError(f"on_empty must be 'raise' or 'warn', got {on_empty!r}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    n = len(x)
    params = {"threshold": threshold, "distance_scale": distance_scale, "max_isolated_share": max_isolated_share}
    if n == 1:  # a one-image class: nothing to link, nothing to report
        return GraphResult(sp.csr_matrix((1, 1)), True, "paper", params)
    sq_norms = np.einsum("ij,ij->i", x, x)
    sample = np.unique(np.linspace(0, n - 1, min(n, 256)).astype(np.int64))
    sample_d = _distances(x, sample, sq_norms)
    positive = sample_d[np.isfinite(sample_d) & (sample_d > 0)]
    eps = RELATIVE_EPS * (float(np.median(positive)) if positive.size else 1.0)

    if isinstance(distance_scale, bool) or not isinstance(distance_scale, (int, float)) or not distance_scale > 0:
        raise ValueError(f"distance_scale must be a positive number, got {distance_scale!r}")
    scale = float(distance_scale)

    rows, cols, vals, perplexities = [], [], [], np.ones(n)
    block = max(1, PAPER_BLOCK_BYTES // (8 * max(n, 1)))
    for start in range(0, n, block):
        ids = np.arange(start, min(start + block, n))
        w = _softmax_rows(scale / np.maximum(_distances(x, ids, sq_norms), eps), ids)
        perplexities[ids] = _perplexity(w)
        r, c = np.nonzero(w >= threshold)
        rows.append(ids[r]), cols.append(c), vals.append(w[r, c])
    weights = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))

    graph = GraphResult(weights, True, "paper", params,
                        extra={"scale_used": scale, "median_perplexity": float(np.median(perplexities))})
    if n >= 2 and graph.isolated_share > max_isolated_share:
        message = (
            f"paper graph: {graph.isolated_share:.0%} of {n} nodes have no out-link with weight >= "
            f"{threshold} (distance_scale={distance_scale!r}, median row perplexity "
            f"{graph.extra['median_perplexity']:.0f} of {n - 1} neighbours). Likely cause: the softmax "
            f"over scale/distance is nearly uniform, so every weight is about 1/{n - 1} = {1 / (n - 1):.2g} "
            f"< {threshold}, as 1/d varies too little at this distance scale. Infomap on this graph "
            f"would leave every node alone and the selection would be arbitrary. Remedy: graph='knn' "
            f"(the default), or a larger distance_scale."
        )
        if on_empty == "raise":
            raise GraphError(message)
        _note(graph, message)
    elif n > 20 and graph.extra["median_perplexity"] > 0.5 * (n - 1):
        _note(graph, f"paper graph: rows are nearly uniform (median perplexity "
                     f"{graph.extra['median_perplexity']:.0f} of {n - 1}); the graph is almost complete and "
                     f"carries little structure; graph='knn' keeps each image's nearest neighbours.")
    return graph


def _distances(x: np.ndarray, ids: np.ndarray, sq_norms: np.ndarray) -> np.ndarray:
    """Euclidean distances from rows `ids` to all rows, with d(i, i) = inf: the sum-of-squares
    formula leaves round-off on the diagonal, and self is no neighbour anyway."""
    d = euclidean_distances(x[ids], x, X_norm_squared=sq_norms[ids, None], Y_norm_squared=sq_norms[None, :])
    d[np.arange(len(ids)), ids] = np.inf
    return d


def _softmax_rows(logits: np.ndarray, self_ids: np.ndarray) -> np.ndarray:
    """Row softmax over the columns other than ``self_ids[row]``. The row max is subtracted
    first, so the huge logits of duplicates do not overflow."""
    logits = logits.copy()
    logits[np.arange(len(logits)), self_ids] = -np.inf
    out = np.exp(logits - logits.max(axis=1, keepdims=True))
    out /= out.sum(axis=1, keepdims=True)
    return out


def _perplexity(w: np.ndarray) -> np.ndarray:
    """2 ** entropy (bits) per row: the effective number of neighbours."""
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(w > 0, w * np.log2(w), 0.0)
    return 2.0 ** -plogp.sum(axis=1)


# --- sparse k-NN graph -------------------------------------------------------------------


def knn_graph(features: np.ndarray, k: int = 10, symmetrize: str = "max") -> GraphResult:
    """Symmetric k-NN graph, ``w_ij = exp(-d_ij^2 / (sigma_i sigma_j))`` with sigma_i the
    distance to i's k-th neighbour (local scaling, Zelnik-Manor & Perona 2004), so dense and
    sparse regions get comparable weights. ``symmetrize``: "max" keeps an edge found from
    either side at full weight, "mean" halves one-sided edges. Memory O(N k); exact
    neighbours by sklearn (brute force in high dimension: time O(N^2 D) in blocks).

    Duplicates: sigma is floored at 1e-6 times the median sigma (1 when all are 0), so
    identical points get weight exp(0) = 1; weights are floored at 1e-12 so an edge never
    vanishes by underflow. No NaN."""
    x = _as_features(features)
    if symmetrize not in ("max", "mean"):
        raise ValueError(f"symmetrize must be 'max' or 'mean', got {symmetrize!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = len(x)
    params = {"k": k, "symmetrize": symmetrize}
    if n == 1:
        return GraphResult(sp.csr_matrix((1, 1)), False, "knn", params)
    dist, idx = _neighbours(x, min(k, n - 1))
    sigma = dist[:, -1]
    positive = sigma[sigma > 0]
    sigma = np.maximum(sigma, RELATIVE_EPS * (float(np.median(positive)) if positive.size else 1.0))
    w = np.maximum(np.exp(-dist**2 / (sigma[:, None] * sigma[idx])), 1e-12)
    rows = np.repeat(np.arange(n), idx.shape[1])
    one_sided = sp.csr_matrix((w.ravel(), (rows, idx.ravel())), shape=(n, n))
    both = one_sided.maximum(one_sided.T) if symmetrize == "max" else (one_sided + one_sided.T) * 0.5
    both.setdiag(0)
    both.eliminate_zeros()
    return GraphResult(both.tocsr(), False, "knn", params, extra={"k_used": int(idx.shape[1])})


def _neighbours(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Distances (float64) and indices of each row's k nearest other rows. Without a query,
    sklearn leaves each row out of its own list even when it has exact copies."""
    dist, idx = NearestNeighbors(n_neighbors=k).fit(x).kneighbors()
    return dist.astype(np.float64), idx


# --- UMAP -----------------------------------------------------------------------------------


def umap_graph(features: np.ndarray, n_neighbors: int = 10, seed: int = 0) -> GraphResult:
    """UMAP's fuzzy simplicial set (fuzzy union of the directed k-NN memberships), undirected,
    euclidean. The exact neighbours are computed here with sklearn and handed to UMAP, as UMAP
    itself does for fewer than 4096 points; this also skips compiling NN-descent (~30 s)."""
    from umap.umap_ import fuzzy_simplicial_set  # imported late: numba makes it slow to load

    x = _as_features(features).astype(np.float32, copy=False)
    n = len(x)
    params = {"n_neighbors": n_neighbors, "seed": seed, "metric": "euclidean"}
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be at least 2 (UMAP counts the point itself), got {n_neighbors}")
    if n == 1:
        return GraphResult(sp.csr_matrix((1, 1)), False, "umap", params)
    k = min(n_neighbors, n)
    dist, idx = _neighbours(x, k - 1)
    # UMAP's neighbour lists start with the point itself at distance 0.
    knn_idx = np.hstack([np.arange(n)[:, None], idx])
    knn_dist = np.hstack([np.zeros((n, 1)), dist]).astype(np.float32)
    graph, _, _ = fuzzy_simplicial_set(x, k, np.random.RandomState(seed), "euclidean",
                                       knn_indices=knn_idx, knn_dists=knn_dist)
    graph = sp.csr_matrix(graph, dtype=np.float64)
    graph.setdiag(0)
    graph.eliminate_zeros()
    return GraphResult(graph, False, "umap", params, extra={"k_used": k})


def umap_embedding(
    pixels_or_features: np.ndarray, n_components: int = 10, n_neighbors: int = 10,
    min_dist: float = 0.05, seed: int = 0,
) -> np.ndarray:
    """UMAP embedding (N, n_components) float32 of uint8 images (N, H, W, C), compared as
    pixels / 255, or of features (N, D). Seeded, hence single-threaded and reproducible.
    Defaults are the paper's UMAP variant (10 neighbours, min_dist 0.05, 10 dimensions)."""
    import umap  # imported late: numba makes it slow to load

    x = np.asarray(pixels_or_features)
    if x.ndim > 2:
        x = x.reshape(len(x), -1)
    x = x.astype(np.float32) / (np.float32(255) if x.dtype == np.uint8 else np.float32(1))
    x = _as_features(x)
    if len(x) < 3:
        raise ValueError(f"UMAP needs at least 3 samples, got {len(x)}")
    # Spectral initialisation needs more points than dimensions; tiny sets start at random.
    init = "spectral" if len(x) > n_components + 1 else "random"
    reducer = umap.UMAP(n_components=n_components, n_neighbors=min(n_neighbors, len(x) - 1),
                        min_dist=min_dist, random_state=seed, n_jobs=1, init=init)
    return reducer.fit_transform(x).astype(np.float32)


def _as_features(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"features must be a non-empty 2-D array (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("features contain NaN or inf")
    return x


def _note(graph: GraphResult, message: str) -> None:
    graph.warnings.append(message)
    warnings.warn(message, GraphWarning, stacklevel=3)


GRAPH_KINDS = {"paper": paper_graph, "knn": knn_graph, "umap": umap_graph}
