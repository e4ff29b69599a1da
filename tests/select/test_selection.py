"""Graph-based selection (InfoDist) and its baselines: graphs, Infomap communities, modular
centrality, quotas, the selection methods and the export of a distilled set."""

import json

import numpy as np
import pytest
from conftest import make_images
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from histodistill.select.config import SelectionConfig
from histodistill.data import sources
from histodistill.select import graphs, selection
from histodistill.select.graphs import GraphError, GraphWarning, build_graph
from histodistill.select.selection import allocate_quota, communities
from histodistill.select import export

CHEAP_METHODS = ["infodist", "random", "kmeans", "herding"]  # umap_kmeans: see the umap test


def planted(n_classes=3, n_blobs=3, per_blob=30, dim=16, seed=0):
    """Well-separated Gaussian blobs inside each class: features, labels, blob ids."""
    rng = np.random.default_rng(seed)
    x, y, blob = [], [], []
    for c in range(n_classes):
        centres = rng.normal(size=(n_blobs, dim)) * 10.0  # centres ~14 apart, blob radius ~4
        for b in range(n_blobs):
            x.append(centres[b] + rng.normal(size=(per_blob, dim)))
            y += [c] * per_blob
            blob += [c * n_blobs + b] * per_blob
    return np.vstack(x), np.array(y), np.array(blob)


def selected_per_blob(sel, blob, c):
    nodes = sel.nodes[sel.nodes["label"] == c]
    return nodes.groupby(blob[nodes["pool_index"]])["selected"].sum()


# --- graphs ---------------------------------------------------------------------------------


def test_paper_graph_weights_by_hand():
    # Points 0, 1, 3 on a line, scale 1: row 0 is softmax(1/1, 1/3) over nodes 1 and 2.
    x = np.array([[0.0], [1.0], [3.0]])
    w = build_graph(x, "paper").weights.toarray()
    e = np.exp([1.0, 1 / 3])
    np.testing.assert_allclose(w[0, 1:], e / e.sum())
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert np.all(np.diag(w) == 0)


def test_paper_graph_blocks_give_the_same_graph(monkeypatch):
    x, _, _ = planted(n_classes=1)
    whole = build_graph(x, "paper", distance_scale=20.0).weights
    monkeypatch.setattr(graphs, "PAPER_BLOCK_BYTES", 8 * len(x) * 7)  # 7 rows per block
    blocked = build_graph(x, "paper", distance_scale=20.0).weights
    # The same edges; the weights agree to rounding: a block's distances go through another
    # BLAS call shape, whose last bits differ on some CPUs (589 of 5103 weights on an AMD EPYC).
    np.testing.assert_array_equal(whole.indptr, blocked.indptr)
    np.testing.assert_array_equal(whole.indices, blocked.indices)
    np.testing.assert_allclose(blocked.data, whole.data, rtol=1e-6, atol=1e-12)


def test_paper_graph_detects_empty_graph_and_names_knn_as_the_remedy():
    # 1200 points at distances ~ 1000: 1/d hardly varies, each weight ~ 1/1199 < 0.001.
    x = np.random.default_rng(0).normal(size=(1200, 32)) * 200.0
    with pytest.raises(GraphError, match=r"100% of 1200 nodes.*graph='knn'"):
        build_graph(x, "paper")
    with pytest.warns(GraphWarning, match="no out-link"):
        empty = build_graph(x, "paper", on_empty="warn")
    assert empty.n_edges == 0 and empty.isolated_share == 1.0
    assert build_graph(x, "knn").isolated_share == 0.0
    for bad in ("auto", 0.0, -1.0, True):  # no calibrated scale any more: a positive number only
        with pytest.raises(ValueError, match="distance_scale"):
            build_graph(x[:10], "paper", distance_scale=bad)
        with pytest.raises(ValueError, match="distance_scale"):
            SelectionConfig(graph="paper", distance_scale=bad)
    with pytest.raises(GraphError, match="class 0"):  # the selection names the class
        selection.select_infodist(x, np.zeros(1200, dtype=int), 10, graph="paper")


def test_paper_graph_warns_when_rows_are_nearly_uniform():
    x, _, _ = planted(n_classes=1)
    with pytest.warns(GraphWarning, match="nearly uniform"):
        g = build_graph(x * 100, "paper")
    assert g.n_edges == 90 * 89  # all weights ~1/89 > 0.001: a complete graph


def test_duplicates_give_finite_weights():
    x, _, _ = planted(n_classes=1)
    x[1] = x[2] = x[0]  # three identical images
    with pytest.warns(GraphWarning, match="nearly uniform"):  # scale 1 on these distances
        paper = build_graph(x, "paper").weights
    knn = build_graph(x, "knn").weights
    assert np.all(np.isfinite(paper.data)) and np.all(np.isfinite(knn.data))
    # the copies share (almost) all of a row's weight, the d -> 0 limit of the softmax
    np.testing.assert_allclose(paper[0, [1, 2]].toarray(), [[0.5, 0.5]], atol=1e-9)
    assert knn[0, 1] == pytest.approx(1.0)


def test_knn_graph_is_sparse_symmetric_and_without_self_links():
    x, _, _ = planted(n_classes=1)
    g = build_graph(x, "knn", k=5)
    w = g.weights
    assert not g.directed and (w != w.T).nnz == 0 and w.diagonal().max() == 0
    assert 90 * 5 / 2 <= g.n_edges <= 90 * 5  # each node's 5 neighbours, pairs counted once
    assert np.all((w.data > 0) & (w.data <= 1))
    assert np.all(np.diff(w.indptr) >= 5)


def test_all_identical_embeddings():
    x = np.ones((40, 8))
    g = build_graph(x, "knn")  # umap: see the umap test
    assert np.all(np.isfinite(g.weights.data)) and g.isolated_share == 0.0
    for scale in (1.0, 30.0):  # no distance varies: uniform rows at any scale, said so
        with pytest.warns(GraphWarning, match="nearly uniform"):
            g = build_graph(x, "paper", distance_scale=scale)
        np.testing.assert_allclose(g.weights.data, 1 / 39)
    y = np.zeros(40, dtype=int)
    for method in CHEAP_METHODS:
        sel = selection.select(method, x, y, 5)
        assert len(np.unique(sel.indices)) == 5, method


def test_unknown_graph_kind_and_bad_features():
    with pytest.raises(ValueError, match="unknown graph kind"):
        build_graph(np.ones((3, 2)), "dense")
    with pytest.raises(ValueError, match="NaN"):
        build_graph(np.array([[0.0], [np.nan]]), "knn")


# --- Infomap communities and modular centrality ---------------------------------------------


def test_knn_infomap_recovers_planted_blobs():
    x, y, blob = planted()
    for c in range(3):
        rows = y == c
        found = communities(build_graph(x[rows], "knn"), seed=0)
        assert adjusted_rand_score(blob[rows], found["module"]) == 1.0


@pytest.mark.parametrize("directed", [False, True])
def test_modular_centrality_is_the_map_equation_formula(directed):
    # Two triangles joined by one link, plus node 6 on its own (no links).
    links = [(0, 1), (1, 2), (2, 0), (3, 4), (4, 5), (5, 3), (2, 3)]
    w = np.zeros((7, 7))
    for i, j in links:
        w[i, j] = 1.0
        if not directed:
            w[j, i] = 1.0
    import scipy.sparse as sp
    graph = graphs.GraphResult(sp.csr_matrix(w), directed, "hand", {})
    table = communities(graph, seed=1)
    assert list(table["node"]) == list(range(7))
    assert table.loc[:2, "module"].nunique() == table.loc[3:5, "module"].nunique() == 1
    p_u = table["flow"].to_numpy()
    p_m = table.groupby("module")["flow"].transform("sum").to_numpy()
    alone = p_m == p_u  # only node in its module (or a module whose other nodes have no flow)
    expected = np.zeros(7)
    expected[~alone] = -(p_m - p_u)[~alone] * np.log2((p_m - p_u)[~alone] / p_m[~alone])
    np.testing.assert_allclose(table["modular_centrality"], expected, rtol=1e-9, atol=1e-12)
    assert (table["modular_centrality"][:6] > 0).all()
    # Node 6 has no links and flow 0, so MC = 0 wherever it lands. Undirected, it is a module
    # of its own: p_m == p_u and MC = -0 log 0 = 0. Directed, Infomap may attach the zero-flow
    # node to another module at no cost (p_u = 0: MC = -p_m log2(1) = 0 too).
    assert table.loc[6, "flow"] == 0.0 and table.loc[6, "modular_centrality"] == 0.0
    if not directed:
        assert alone[6] and table["module"].nunique() == 3


def test_communities_keep_isolated_nodes():
    import scipy.sparse as sp
    graph = graphs.GraphResult(sp.csr_matrix((5, 5)), False, "empty", {})
    table = communities(graph)
    assert len(table) == 5 and table["module"].nunique() == 5
    assert (table["flow"] == 0).all()


# --- quotas ---------------------------------------------------------------------------------


def test_quota_equal_shares_and_remainder_by_flow():
    np.testing.assert_array_equal(allocate_quota([30, 30, 30], [0.3, 0.4, 0.3], 9), [3, 3, 3])
    np.testing.assert_array_equal(allocate_quota([30, 30, 30], [0.3, 0.4, 0.3], 10), [3, 4, 3])
    # ties in flow go to the lower module position
    np.testing.assert_array_equal(allocate_quota([30, 30, 30], [0.4, 0.2, 0.4], 11), [4, 3, 4])


def test_quota_with_more_modules_than_ipc():
    np.testing.assert_array_equal(allocate_quota([5, 1, 2, 9], [0.1, 0.4, 0.3, 0.2], 2), [0, 1, 1, 0])
    np.testing.assert_array_equal(allocate_quota([1, 1, 1], [0.2, 0.2, 0.6], 1), [0, 0, 1])


def test_quota_small_module_shortfall_comes_from_largest_remaining():
    # share 4 each; module 0 has only 1, the 3 missing come one at a time from the module
    # with most left: module 2 (left 16), then 2 (15) and 1 (15) are equal -> 1, then 2.
    np.testing.assert_array_equal(allocate_quota([1, 19, 20], [0.5, 0.2, 0.3], 12), [1, 5, 6])
    q = allocate_quota([2, 3, 50, 4], [0.1, 0.2, 0.3, 0.4], 20)
    assert q.sum() == 20 and list(q[[0, 1, 3]]) == [2, 3, 4]
    with pytest.raises(ValueError, match="cannot take 10"):
        allocate_quota([3, 3], [0.5, 0.5], 10)


# --- selection methods ----------------------------------------------------------------------


def test_infodist_takes_three_per_blob_at_ipc_9():
    x, y, blob = planted()
    sel = selection.select_infodist(x, y, 9, graph="knn", seed=0)
    assert sel.per_class_counts() == {0: 9, 1: 9, 2: 9}
    for c in range(3):
        assert list(selected_per_blob(sel, blob, c)) == [3, 3, 3]
    assert list(sel.labels) == sorted(sel.labels)  # grouped by class in class order


def test_infodist_ipc_10_gives_the_extra_image_to_the_most_flow_module():
    x, y, blob = planted()
    sel = selection.select_infodist(x, y, 10, graph="knn", seed=0)
    for c in range(3):
        counts = selected_per_blob(sel, blob, c)
        assert sorted(counts) == [3, 3, 4]
        nodes = sel.nodes[sel.nodes["label"] == c]
        flows = nodes.groupby(blob[nodes["pool_index"]])["flow"].sum()
        assert counts.idxmax() == flows.idxmax()


def test_infodist_keeps_the_most_central_images_of_each_module():
    x, y, _ = planted()
    for rank, column in (("centrality", "modular_centrality"), ("flow", "flow")):
        nodes = selection.select_infodist(x, y, 9, rank=rank).nodes
        for _, module in nodes.groupby(["label", "module"]):
            kept, left = module[module["selected"]], module[~module["selected"]]
            assert kept[column].min() >= left[column].max()


@pytest.mark.parametrize("method", CHEAP_METHODS)
def test_same_seed_same_selection(method):
    x, y, _ = planted()
    first, again = selection.select(method, x, y, 7, seed=3), selection.select(method, x, y, 7, seed=3)
    np.testing.assert_array_equal(first.indices, again.indices)
    assert first.indices.dtype == np.int64 and len(np.unique(first.indices)) == 21
    assert first.method == method and first.params["ipc"] == 7
    assert (first.nodes is not None) == (method == "infodist")


def test_random_selection_depends_on_seed():
    x, y, _ = planted()
    assert not np.array_equal(selection.select_random(x, y, 7, seed=0).indices,
                              selection.select_random(x, y, 7, seed=1).indices)


def test_herding_by_hand():
    # Class mean 5: first 4 (|4-5| = 1 ties with 6; lower index wins), then 6 (mean 5 exactly).
    x = np.array([[0.0], [10.0], [4.0], [6.0]])
    sel = selection.select_herding(x, np.zeros(4, dtype=int), 2)
    assert sorted(sel.indices) == [2, 3]


def test_kmeans_takes_the_image_nearest_each_centroid():
    # Centroids 1.0 and 10.1 sit exactly on images 2 and 6.
    x = np.array([[0.8], [0.9], [1.0], [1.1], [1.2], [10.0], [10.1], [10.2]])
    sel = selection.select_kmeans(x, np.zeros(8, dtype=int), 2, seed=0)
    assert sorted(sel.indices) == [2, 6]
    # Three identical images and k = 2: the two centroids still get two distinct images.
    same = selection.select_kmeans(np.zeros((3, 2)), np.zeros(3, dtype=int), 2, seed=0)
    assert len(np.unique(same.indices)) == 2


def test_one_image_class_and_pool_smaller_than_ipc():
    x, y, _ = planted()
    x, y = np.vstack([x, np.ones((1, 16))]), np.append(y, 3)  # class 3: a single image
    for method in CHEAP_METHODS:
        sel = selection.select(method, x, y, 1)
        assert sel.per_class_counts() == {0: 1, 1: 1, 2: 1, 3: 1} and sel.indices[-1] == 270
    assert build_graph(np.ones((1, 4)), "paper").n_edges == 0
    with pytest.raises(ValueError, match=r"ipc=5: class 3: 1 images"):
        selection.select("random", x, y, 5)
    with pytest.raises(ValueError, match="unknown selection method"):
        selection.select("best", x, y, 1)


# --- UMAP (numba compiles on first use: one small test) --------------------------------------


def test_umap_graph_and_umap_kmeans():
    x, y, blob = planted(n_classes=2, per_blob=15)
    g = build_graph(x[y == 0], "umap", n_neighbors=10)
    w = g.weights
    assert not g.directed and (abs(w - w.T) > 1e-12).nnz == 0 and np.all(np.isfinite(w.data))
    assert adjusted_rand_score(blob[y == 0], communities(g)["module"]) == 1.0
    same = build_graph(np.ones((20, 4)), "umap")  # all identical: finite, nobody isolated
    assert np.all(np.isfinite(same.weights.data)) and same.isolated_share == 0.0
    emb = graphs.umap_embedding(x, n_components=4, seed=0)
    assert emb.shape == (90, 4) and emb.dtype == np.float32
    first, again = (selection.select_umap_kmeans(x, y, 3, seed=0, n_components=4) for _ in range(2))
    np.testing.assert_array_equal(first.indices, again.indices)
    assert first.per_class_counts() == {0: 3, 1: 3}


# --- export ---------------------------------------------------------------------------------


def test_export_round_trips_through_read_npz(tmp_path):
    x, y, _ = planted()
    images = make_images(len(y), size=8)
    names = ["adipose", "smooth muscle", "normal/colon mucosa"]
    sel = selection.select_infodist(x, y, 4, seed=0)
    source = {"kind": "synthetic pool", "n_pool": len(y)}
    paths = export.export_distilled(sel, images, names, tmp_path / "d", source, "abc123")

    raw = sources.read_npz(paths["npz"])
    got_images, got_labels = raw.splits["train"]
    assert raw.class_names == names and list(raw.splits) == ["train"]
    np.testing.assert_array_equal(got_images, images[sel.indices])
    np.testing.assert_array_equal(np.bincount(got_labels), [4, 4, 4])
    with np.load(paths["npz"], allow_pickle=False) as z:
        assert z["train_labels"].dtype == np.uint8 and z["train_labels"].shape == (12, 1)

    assert sorted(p.name for p in (tmp_path / "d").glob("grid_*.png")) == [
        "grid_0_adipose.png", "grid_1_smooth-muscle.png", "grid_2_normal-colon-mucosa.png"]
    grid = np.asarray(Image.open(paths["grid_0"]))
    assert grid.shape == (2 * 8 + 2, 2 * 8 + 2, 3) and (grid[8:10] == 255).all()  # 2x2, white gap

    card = json.loads(paths["card"].read_text())
    assert card["source"] == source and card["method"] == "infodist" and card["config_hash"] == "abc123"
    assert card["counts_per_class"] == {n: 4 for n in names} and card["params"]["ipc"] == 4
    assert card["created"][:4].isdigit() and "T" in card["created"]


def test_export_refuses_a_selection_missing_a_class(tmp_path):
    x, y, _ = planted()
    sel = selection.select_random(x[y < 2], y[y < 2], 2)
    with pytest.raises(ValueError, match="every class"):
        export.export_distilled(sel, make_images(180, 8), ["a", "b", "c"], tmp_path, {}, "h")


@pytest.mark.parametrize("per_class", [1000, 5000])
def test_default_graph_recovers_planted_blobs_of_unequal_size_and_covers_each(per_class):
    # One class of 5-8 Gaussian blobs of different sizes in 512-D, at the class sizes where the
    # released graph's calibrated variant over-split (106 and 548 modules): the default graph
    # must find the blobs (ARI >= 0.9) and the selection must take an image from every blob.
    rng = np.random.default_rng(per_class)
    for n_blobs in (5, 8):
        share = rng.dirichlet(np.full(n_blobs, 2.0))
        blob = np.sort(rng.choice(n_blobs, size=per_class, p=share))
        centres = rng.normal(size=(n_blobs, 512)) * 1.0
        x = (centres[blob] + rng.normal(size=(per_class, 512)) * 0.25).astype(np.float32)
        sel = selection.select_infodist(x, np.zeros(per_class, dtype=int), ipc=10, graph=SelectionConfig().graph,
                                        k=SelectionConfig().k)
        assert adjusted_rand_score(blob, sel.nodes["module"]) >= 0.9
        assert set(blob[sel.indices]) == set(range(n_blobs))
        assert sel.graphs[0]["module_coverage"] == 1.0 and sel.graphs[0]["mean_distance_to_selected"] > 0
