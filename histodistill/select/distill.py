"""The selection stages, cached like the others: embed the pool, pick the distilled set,
and export it as a product a hospital could share.

    pool ─┬─ embedding (ConvNet features, or UMAP of pixels) ── selection (+ distilled/)
    classifier ┘
    real train + val (privacy filter only) ─────────────────────┘
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import cache
from ..classifiers import convnet
from .config import SelectionConfig
from ..data.dataset import DataBundle
from ..generate import stages
from . import privacy_filter, selection
from .graphs import umap_embedding
from ..classifiers.judge import load_classifier
from . import export

# embedding 2: contiguous inputs, 3: the ConvNet's pooling (`convnet.HalvingPool`); selection 3: coverage columns
VERSIONS = {"embedding": 3, "selection": 3}
PRODUCT = "distilled"  # the exported data set's folder inside the selection artifact


def embed_pool(embedding: str, pool: cache.Artifact, classifier: cache.Artifact, seed: int = 0,
               cache_root: Path | None = None) -> cache.Artifact:
    """``features.npy`` (N, D) float32 for every pool image: the real-trained ConvNet's
    features (``convnet``), or a 10-D UMAP of the raw pixels (``umap``, the paper's variant)."""
    if embedding == "convnet":
        key_cfg, inputs = {"embedding": embedding}, {"pool": pool.key, "classifier": classifier.key}
    else:  # UMAP of pixels ignores the ConvNet
        key_cfg, inputs = {"embedding": embedding, "seed": seed}, {"pool": pool.key}

    def build(folder: Path) -> None:
        images, _, _ = stages.load_pool(pool)
        if embedding == "convnet":
            features = convnet.embed(load_classifier(classifier), images)
        else:
            features = umap_embedding(images, seed=seed)
        np.save(folder / "features.npy", features.astype(np.float32))

    return cache.cached("embedding", key_cfg, build, inputs, VERSIONS["embedding"], cache_root)


def load_features(artifact: cache.Artifact) -> np.ndarray:
    return np.load(artifact.file("features.npy"), allow_pickle=False)


def method_params(cfg: SelectionConfig) -> dict:
    """The keyword arguments `selection.select` takes for `cfg.method`."""
    if cfg.method != "infodist":
        return {}
    params = {"graph": cfg.graph, "rank": cfg.rank, "trials": cfg.trials}
    if cfg.graph == "knn":
        params["k"] = cfg.k
    elif cfg.graph == "paper":
        params["distance_scale"] = cfg.distance_scale
    else:
        params["n_neighbors"] = cfg.k
    return params


def distill(cfg: SelectionConfig, pool: cache.Artifact, classifier: cache.Artifact, real_data: str = "",
            cache_root: Path | None = None, bundle: DataBundle | None = None) -> cache.Artifact:
    """Select `cfg.ipc` images per class with `cfg.method`; writes ``selection.npz``
    (indices into the pool, labels), ``nodes.csv`` and ``graphs.csv`` (InfoDist: module,
    flow and modular centrality of every pool image offered to it; graph diagnostics per
    class), and the product ``distilled/`` (MedMNIST npz, a PNG grid per class, a JSON data
    card). `real_data` describes the real images the generator learnt, for the data card (the
    pool's key already depends on them, so it is not part of this stage's key).

    With `cfg.privacy_filter`, the pool images `privacy_filter.near_copy_filter` flags
    against `bundle`'s real train split (thresholds from its val split) are removed before
    the selection sees the pool, and ``privacy_filter.csv`` counts them per class; indices
    and ``nodes.csv``'s ``pool_index`` still point into the whole pool, and ``nodes.csv``
    holds the kept images only. A class left with fewer than `cfg.ipc` images raises
    `privacy_filter.FilterError` (a ValueError)."""
    embedding = embed_pool(cfg.embedding, pool, classifier, cfg.seed, cache_root)
    inputs = {"pool": pool.key, "embedding": embedding.key}
    if cfg.privacy_filter:
        if bundle is None:
            raise ValueError("privacy_filter compares the pool with the real train and val splits: "
                             "pass the data bundle (bundle=...)")
        # The filter reads the real splits and the judge's features, whatever the embedding.
        inputs.update(data=bundle.artifact.key, classifier=classifier.key)
    key = cache.stage_key("selection", cfg, inputs, VERSIONS["selection"])

    def build(folder: Path) -> None:
        images, labels, class_names = stages.load_pool(pool)
        offered, filter_card = np.arange(len(labels)), {"applied": False}
        if cfg.privacy_filter:
            judge = load_classifier(classifier)
            keep, table = privacy_filter.near_copy_filter(images, labels, bundle, lambda x: convnet.embed(judge, x))
            privacy_filter.check_enough(table, cfg.ipc)
            table.to_csv(folder / privacy_filter.TABLE_FILE, index=False)
            offered = np.flatnonzero(keep)
            filter_card = {"applied": True, "removed": int(table["removed"].sum()), "kept": int(table["kept"].sum()),
                           "criterion": "calibrated near-copy test (histodistill.generate.memorisation) in raw pixels "
                                        "and in the real-trained ConvNet's features; removed when either flags it",
                           "thresholds_from": "the real val split", "compared_with": "the real train split",
                           "data_key": bundle.artifact.key}
        chosen = selection.select(cfg.method, load_features(embedding)[offered], labels[offered], cfg.ipc,
                                  seed=cfg.seed, **method_params(cfg))
        chosen = _on_whole_pool(chosen, offered)
        np.savez(folder / "selection.npz", indices=chosen.indices, labels=chosen.labels)
        if chosen.nodes is not None:
            chosen.nodes.to_csv(folder / "nodes.csv", index=False)
            graphs = pd.DataFrame(chosen.graphs)
            graphs.insert(1, "class_name", [class_names[c] for c in graphs["class"]])
            graphs.to_csv(folder / "graphs.csv", index=False)
        pool_record = json.loads(pool.file(cache.CONFIG_FILE).read_text())
        source = {"description": "synthetic images sampled from a latent diffusion model trained on real data",
                  "real_data": real_data,
                  "pool_key": pool.key, "pool_config": pool_record["config"], "embedding": cfg.embedding,
                  "privacy_filter": filter_card}
        export.export_distilled(chosen, images, class_names, folder / PRODUCT, source, key)

    return cache.cached("selection", cfg, build, inputs, VERSIONS["selection"], cache_root)


def _on_whole_pool(chosen: selection.Selection, offered: np.ndarray) -> selection.Selection:
    """`chosen`, made from the pool rows `offered` (ascending), with its indices and its
    nodes' ``pool_index`` pointing into the whole pool again. Ascending rows keep each
    class's indices sorted."""
    chosen.indices = offered[chosen.indices]
    if chosen.nodes is not None:
        chosen.nodes["pool_index"] = offered[chosen.nodes["pool_index"].to_numpy()]
    return chosen


def load_privacy_filter(artifact: cache.Artifact) -> pd.DataFrame | None:
    """The privacy filter's per-class table of a selection, or None when it ran without."""
    path = artifact.file(privacy_filter.TABLE_FILE)
    return pd.read_csv(path) if path.is_file() else None


def load_selection(artifact: cache.Artifact) -> tuple[np.ndarray, np.ndarray, pd.DataFrame | None, pd.DataFrame | None]:
    """(indices into the pool, labels, per-node table or None, per-class graph table or None)."""
    with np.load(artifact.file("selection.npz"), allow_pickle=False) as z:
        indices, labels = z["indices"], z["labels"]
    nodes = pd.read_csv(artifact.file("nodes.csv")) if artifact.file("nodes.csv").is_file() else None
    graphs = pd.read_csv(artifact.file("graphs.csv")) if artifact.file("graphs.csv").is_file() else None
    return indices, labels, nodes, graphs


def copy_product(artifact: cache.Artifact, destination: Path) -> Path:
    """Copy the exported distilled set out of the cache (replacing an older copy)."""
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(artifact.file(PRODUCT), destination)
    return destination
