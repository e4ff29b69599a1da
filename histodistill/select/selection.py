"""Which pool images to keep: InfoDist (graph, Infomap, quotas, modular centrality) and the
baselines it is compared with, all behind one interface.

    >>> from histodistill.select import selection
    >>> sel = selection.select("infodist", pool_f, pool_y, ipc=10, graph="knn", seed=0)
    >>> sel.indices, sel.per_class_counts(), sel.nodes      # nodes: module/flow/centrality

Per class, InfoDist builds a graph over the class's pool features (`graphs`), finds Infomap
modules, gives each module an equal share of the images per class (`allocate_quota`) and
keeps inside each module the images of highest modular centrality: the map-equation
centrality of Blöcker et al. (2022), MC(u) = -(p_m - p_u) log2((p_m - p_u) / p_m), as Infomap
reports it (not Ghalmane et al.'s 2019 measure). A node alone in its module has p_m = p_u
and MC = 0 (0 log 0 = 0). Within a module of several nodes MC grows with the node's flow
while p_u < 0.63 p_m, so ``rank="centrality"`` and ``rank="flow"`` nearly always agree.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics.pairwise import euclidean_distances

from .graphs import GraphError, GraphResult, build_graph, umap_embedding

COMMUNITY_COLUMNS = ["node", "module", "flow", "modular_centrality"]


@dataclass
class Selection:
    indices: np.ndarray  # int64 indices into the pool, grouped by class in class order
    labels: np.ndarray  # int64 class of each selected image
    method: str
    params: dict
    nodes: pd.DataFrame | None = None  # infodist: one row per pool image (module, flow, ...)
    graphs: list[dict] | None = None  # infodist: per-class graph diagnostics

    def per_class_counts(self) -> dict[int, int]:
        values, counts = np.unique(self.labels, return_counts=True)
        return {int(v): int(c) for v, c in zip(values, counts)}


# --- Infomap --------------------------------------------------------------------------------


def communities(graph: GraphResult, seed: int = 0, trials: int = 5) -> pd.DataFrame:
    """Two-level Infomap on `graph` (directed when the graph is). One row per node 0..N-1, in
    order: ``node``, ``module`` (Infomap's id), ``flow``, ``modular_centrality``.

    Every node is added explicitly, so an isolated node is still reported, with flow 0 and
    centrality 0: in an undirected graph as a module of its own; in a directed one Infomap may
    attach such a zero-flow node to any module (it costs nothing). Undirected graphs pass each
    pair once. Same seed, same result."""
    import infomap

    if seed < 0 or trials < 1:
        raise ValueError(f"need seed >= 0 and trials >= 1, got seed={seed}, trials={trials}")
    # Infomap rejects --seed 0, so project seed s runs Infomap with --seed s + 1.
    flags = f"--two-level --num-trials {int(trials)} --seed {int(seed) + 1} --silent"
    im = infomap.Infomap(flags + (" --directed" if graph.directed else ""))
    im.add_nodes(range(graph.n_nodes))
    links = (graph.weights if graph.directed else sp.triu(graph.weights, k=1)).tocoo()
    if links.nnz:
        im.add_links(np.column_stack([links.row, links.col, links.data]))
    result = im.run()
    columns = ["node_id", "module_id", "flow", "modular_centrality"]
    # infomap >= 2.15 returns a Result (its get_dataframe is deprecated); older ones return None.
    table = result.to_dataframe(columns) if hasattr(result, "to_dataframe") else im.get_dataframe(columns)
    table = table.sort_values("node_id").reset_index(drop=True)
    table.columns = COMMUNITY_COLUMNS
    if not np.array_equal(table["node"].to_numpy(), np.arange(graph.n_nodes)):
        raise RuntimeError(f"Infomap reported {len(table)} nodes for a graph of {graph.n_nodes}")
    return table


def allocate_quota(module_sizes, module_flows, ipc: int) -> np.ndarray:
    """How many images each module gives, aligned with the inputs (module order = module id).

    Each module gets ``ipc // n_modules``; the remainder goes one each to the modules with
    most flow. A module smaller than its share gives what it has, and the shortfall is taken
    one at a time from the module with most images left. With more modules than `ipc`, the
    `ipc` modules with most flow give one each. Ties go to the lower module position."""
    sizes = np.asarray(module_sizes, dtype=np.int64)
    flows = np.asarray(module_flows, dtype=np.float64)
    if sizes.ndim != 1 or sizes.shape != flows.shape or len(sizes) == 0:
        raise ValueError(f"need equally long 1-D module sizes and flows, got {sizes.shape} and {flows.shape}")
    if (sizes < 0).any() or ipc < 0:
        raise ValueError("module sizes and ipc must be non-negative")
    if ipc > sizes.sum():
        raise ValueError(f"cannot take {ipc} images from modules holding {sizes.sum()} in all")
    by_flow = np.lexsort((np.arange(len(sizes)), -flows))  # most flow first, ties by position
    quota = np.zeros(len(sizes), dtype=np.int64)
    if len(sizes) > ipc:
        quota[by_flow[sizes[by_flow] > 0][:ipc]] = 1
    else:
        share, remainder = divmod(ipc, len(sizes))
        quota = np.minimum(sizes, share)
        quota[by_flow[:remainder]] = np.minimum(sizes[by_flow[:remainder]], share + 1)
    while quota.sum() < ipc:
        quota[np.argmax(sizes - quota)] += 1  # argmax: the first of equals, i.e. lowest position
    return quota


# --- selection methods ----------------------------------------------------------------------


def select_infodist(features, labels, ipc: int, graph: str = "knn", rank: str = "centrality",
                    seed: int = 0, trials: int = 5, **graph_params) -> Selection:
    """InfoDist per class: graph -> Infomap modules -> quotas -> top images per module by
    modular centrality (``rank="centrality"``) or flow (``rank="flow"``), ties by index."""
    x, y, classes = _check_pool(features, labels, ipc)
    if rank not in ("centrality", "flow"):
        raise ValueError(f"rank must be 'centrality' or 'flow', got {rank!r}")
    score = "modular_centrality" if rank == "centrality" else "flow"
    if graph == "umap":
        graph_params.setdefault("seed", seed)
    chosen, tables, diagnostics = [], [], []
    for c in classes:
        rows = np.flatnonzero(y == c)
        try:
            g = build_graph(_flat(x[rows]), graph, **graph_params)
        except GraphError as err:
            raise GraphError(f"class {c}: {err}") from None
        nodes = communities(g, seed=seed, trials=trials)
        modules = nodes.groupby("module").agg(size=("node", "size"), flow=("flow", "sum"))
        quota = dict(zip(modules.index, allocate_quota(modules["size"], modules["flow"], ipc)))
        order = nodes.sort_values(["module", score, "node"], ascending=[True, False, True])
        nodes["rank_in_module"] = order.groupby("module").cumcount().reindex(nodes.index)
        nodes["selected"] = nodes["rank_in_module"] < nodes["module"].map(quota)
        nodes.insert(0, "pool_index", rows)
        nodes.insert(1, "label", c)
        picked = nodes["selected"].to_numpy()
        chosen.append(rows[picked])
        tables.append(nodes)
        diagnostics.append({"class": int(c), "n_modules": len(modules), **g.diagnostics(),
                            **coverage(_flat(x[rows]), picked, nodes["module"].to_numpy())})
    params = {"ipc": ipc, "graph": graph, "rank": rank, "seed": seed, "trials": trials, **graph_params}
    out = _selection(chosen, y, "infodist", params)
    out.nodes = pd.concat(tables, ignore_index=True)
    out.graphs = diagnostics
    return out


def coverage(features: np.ndarray, selected: np.ndarray, modules: np.ndarray) -> dict:
    """How well a class's selection covers its pool: the share of its Infomap modules with a
    selected image (``module_coverage``), and the mean distance (in the embedding) from each
    pool image to its nearest selected image (``mean_distance_to_selected``)."""
    from sklearn.metrics import pairwise_distances_argmin_min

    covered = np.isin(np.unique(modules), modules[selected]).mean()
    _, distances = pairwise_distances_argmin_min(features, features[selected])
    return {"module_coverage": float(covered), "mean_distance_to_selected": float(distances.mean())}


def select_random(features, labels, ipc: int, seed: int = 0) -> Selection:
    """`ipc` images per class uniformly at random, without replacement (seeded)."""
    _, y, classes = _check_pool(features, labels, ipc)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(y == c), ipc, replace=False) for c in classes]
    return _selection(chosen, y, "random", {"ipc": ipc, "seed": seed})


def select_kmeans(features, labels, ipc: int, seed: int = 0, n_init: int = 10) -> Selection:
    """Per class, k-means with ``k = ipc`` (seeded) and the image nearest each centroid."""
    x, y, classes = _check_pool(features, labels, ipc)
    chosen = []
    for c in classes:
        rows = np.flatnonzero(y == c)
        chosen.append(rows[_nearest_to_centroids(_flat(x[rows]), ipc, seed, n_init)])
    return _selection(chosen, y, "kmeans", {"ipc": ipc, "seed": seed, "n_init": n_init})


def select_umap_kmeans(features, labels, ipc: int, seed: int = 0, n_init: int = 10,
                       per_class: bool = False, **umap_params) -> Selection:
    """k-means selection (as `select_kmeans`) in a UMAP embedding of the pool: of all classes
    together (default) or of each class alone. `features` may be uint8 images (pixel UMAP)."""
    x, y, classes = _check_pool(features, labels, ipc)
    embedded = None if per_class else umap_embedding(x, seed=seed, **umap_params)
    chosen = []
    for c in classes:
        rows = np.flatnonzero(y == c)
        part = umap_embedding(x[rows], seed=seed, **umap_params) if per_class else embedded[rows]
        chosen.append(rows[_nearest_to_centroids(part, ipc, seed, n_init)])
    params = {"ipc": ipc, "seed": seed, "n_init": n_init, "per_class": per_class, **umap_params}
    return _selection(chosen, y, "umap_kmeans", params)


def select_herding(features, labels, ipc: int, seed: int = 0) -> Selection:
    """Greedy herding per class: each step adds the unused image that brings the mean of the
    chosen features closest to the class mean (ties by index). Deterministic; `seed` is
    accepted for the common interface only."""
    x, y, classes = _check_pool(features, labels, ipc)
    chosen = []
    for c in classes:
        rows = np.flatnonzero(y == c)
        part = _flat(x[rows]).astype(np.float64)
        target, total = part.mean(axis=0), np.zeros(part.shape[1])
        sq_norms, free, picked = np.einsum("ij,ij->i", part, part), np.ones(len(rows), bool), []
        for t in range(1, ipc + 1):
            # ||target - (total + x)/t||^2 = ||r - x||^2 / t^2 with r = t*target - total.
            residual = t * target - total
            cost = np.where(free, sq_norms - 2.0 * part @ residual, np.inf)
            best = int(np.argmin(cost))
            picked.append(best)
            free[best], total = False, total + part[best]
        chosen.append(rows[picked])
    return _selection(chosen, y, "herding", {"ipc": ipc, "seed": seed})


METHODS = {"infodist": select_infodist, "random": select_random, "kmeans": select_kmeans,
           "umap_kmeans": select_umap_kmeans, "herding": select_herding}


def select(method: str, features, labels, ipc: int, seed: int = 0, **params) -> Selection:
    """Run the selection method named `method` (a key of `METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; choose one of {sorted(METHODS)}")
    return METHODS[method](features, labels, ipc, seed=seed, **params)


def _nearest_to_centroids(x: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    """Indices of k distinct rows, one per k-means centroid: a one-to-one matching of
    centroids to rows with least total distance (Hungarian), so two centroids never share
    an image even when one image is nearest to both."""
    if k == len(x):
        return np.arange(len(x))
    with warnings.catch_warnings():
        # duplicates can leave fewer distinct points than clusters; the matching still works
        warnings.simplefilter("ignore", ConvergenceWarning)
        centres = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(x).cluster_centers_
    _, picked = linear_sum_assignment(euclidean_distances(centres, x))
    return picked


def _check_pool(features, labels, ipc: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, y = np.asarray(features), np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers of shape (N,) or (N, 1), got {y.dtype} {y.shape}")
    if x.ndim < 2 or len(x) != len(y):
        raise ValueError(f"features {x.shape} must be (N, ...) with one row per label ({len(y)})")
    if not isinstance(ipc, (int, np.integer)) or ipc < 1:
        raise ValueError(f"ipc must be a positive integer, got {ipc!r}")
    classes, counts = np.unique(y, return_counts=True)
    short = [f"class {c}: {n} images" for c, n in zip(classes, counts) if n < ipc]
    if short:
        raise ValueError(f"pool too small for ipc={ipc}: {'; '.join(short)}. "
                         f"Sample more pool images of these classes or lower ipc.")
    return x, y.astype(np.int64), classes


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1) if x.ndim > 2 else x


def _selection(chosen: list[np.ndarray], y: np.ndarray, method: str, params: dict) -> Selection:
    """Indices per class sorted ascending, classes in order."""
    indices = np.concatenate([np.sort(c) for c in chosen]).astype(np.int64)
    return Selection(indices, y[indices], method, params)


