"""Privacy-aware selection: the pool's near-copies of real train images are removed before the
selection, the selection still indexes the whole pool, and filter-off selections are unchanged."""

import dataclasses
import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_images

from histodistill.data.own_data import write_npz
from histodistill import cache
from histodistill.classifiers import convnet
from histodistill.data.dataset import DataBundle, Split
from histodistill.evaluate import ablations
from histodistill.generate import memorisation, stages
from histodistill.select import distill, privacy_filter, selection
from histodistill.classifiers.config import DownstreamConfig
from histodistill.evaluate.config import AblationConfig
from histodistill.select.config import SelectionConfig
from histodistill.classifiers.judge import load_classifier

N_CLASSES, POOL_PER_CLASS, IPC = 3, 16, 4


def real_bundle(root, tag: str = "real") -> DataBundle:
    """Random real splits (30 train, 20 val, 5 test images per class) in a data artifact."""
    def split(per_class, seed):
        return Split(make_images(per_class * N_CLASSES, seed=seed), np.repeat(np.arange(N_CLASSES), per_class))

    artifact = cache.cached("data", {"tag": tag}, lambda folder: (folder / "tag.txt").write_text(tag), cache_root=root)
    return DataBundle({"train": split(30, 1), "val": split(20, 2), "test": split(5, 3)},
                      [f"class {c}" for c in range(N_CLASSES)], {"source": "synthetic test data"}, artifact)


def planted_pool(train: Split, copies: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random pool with, in each class, `copies[c]` (default 2) planted copies of that
    class's train images: the first exact, the rest with noise of +-2 grey levels. Returns
    images, labels and the planted rows."""
    copies = {c: 2 for c in range(N_CLASSES)} | (copies or {})
    images = make_images(POOL_PER_CLASS * N_CLASSES, seed=4)
    labels = np.repeat(np.arange(N_CLASSES), POOL_PER_CLASS)
    rng, planted = np.random.default_rng(5), []
    for c in range(N_CLASSES):
        in_class = np.flatnonzero(labels == c)
        rows = in_class[np.linspace(0, len(in_class) - 1, copies[c]).astype(int)]  # spread over the class
        sources = np.flatnonzero(train.labels == c)[:len(rows)]
        for i, (row, source) in enumerate(zip(rows, sources)):
            noise = 0 if i == 0 else rng.integers(-2, 3, train.images[source].shape)
            images[row] = np.clip(train.images[source].astype(int) + noise, 0, 255)
        planted += rows.tolist()
    return images, labels, np.array(sorted(planted))


def pool_artifact(root, images, labels) -> cache.Artifact:
    names = [f"class {c}" for c in range(N_CLASSES)]
    return cache.cached("pool", {"sha256": hashlib.sha256(images.tobytes()).hexdigest()},
                        lambda folder: write_npz(folder / stages.POOL_FILE, images, labels, names),
                        cache_root=root)


def judge_artifact(root) -> cache.Artifact:
    torch.manual_seed(0)
    model = convnet.ConvNet(N_CLASSES, 28, width=4)  # untrained: its features are still a fixed map
    return cache.cached("classifier", {"width": 4},
                        lambda folder: convnet.save_classifier(model, folder / "classifier"), cache_root=root)


@pytest.fixture
def setup(tmp_path):
    root = tmp_path / "cache"
    bundle = real_bundle(root)
    images, labels, planted = planted_pool(bundle.splits["train"])
    return SimpleNamespace(root=root, bundle=bundle, images=images, labels=labels, planted=planted,
                           pool=pool_artifact(root, images, labels), clf=judge_artifact(root))


def flagged_by_the_criterion(s) -> np.ndarray:
    """The audit's criterion applied directly: flagged in pixels or in the judge's features."""
    judge = load_classifier(s.clf)
    train, val = s.bundle.splits["train"], s.bundle.splits["val"]
    flagged = np.zeros(len(s.labels), bool)
    for to_vectors in (memorisation.pixel_vectors, lambda x: convnet.embed(judge, x)):
        train_v = to_vectors(train.images)
        val_ratios = memorisation.copy_ratios(to_vectors(val.images), train_v)["ratios"]
        thresholds = memorisation.copy_thresholds(val_ratios, val.labels, N_CLASSES)
        flagged |= thresholds.flags(memorisation.copy_ratios(to_vectors(s.images), train_v)["ratios"], s.labels)
    return flagged


def select_cfg(**changes) -> SelectionConfig:
    return SelectionConfig(ipc=IPC, k=3, **changes)


# --- (a) nothing flagged gets through ----------------------------------------------------------


def test_the_filter_removes_every_flagged_image_and_the_planted_copies(setup):
    s = setup
    judge = load_classifier(s.clf)
    keep, table = privacy_filter.near_copy_filter(s.images, s.labels, s.bundle, lambda x: convnet.embed(judge, x))
    flagged = flagged_by_the_criterion(s)
    np.testing.assert_array_equal(keep, ~flagged)
    assert not keep[s.planted].any()  # exact and near-exact copies of train images are removed
    assert table["class"].tolist() == list(range(N_CLASSES)) and (table["pool_images"] == POOL_PER_CLASS).all()
    assert (table["removed"] + table["kept"] == table["pool_images"]).all()
    assert table["removed"].tolist() == np.bincount(s.labels[~keep], minlength=N_CLASSES).tolist()
    assert (table["removed"] <= table["flagged_pixels"] + table["flagged_features"]).all()
    assert (table["removed"] >= np.maximum(table["flagged_pixels"], table["flagged_features"])).all()
    assert (table["flagged_pixels"] >= 2).all()  # the two planted copies of every class


@pytest.mark.parametrize("method", ["infodist", "random", "kmeans"])
def test_a_filtered_selection_holds_no_flagged_image(setup, method):
    s = setup
    chosen = distill.distill(select_cfg(method=method, privacy_filter=True), s.pool, s.clf, cache_root=s.root,
                             bundle=s.bundle)
    indices, labels, nodes, _ = distill.load_selection(chosen)
    flagged = flagged_by_the_criterion(s)
    assert not flagged[indices].any() and not np.isin(indices, s.planted).any()
    assert np.bincount(labels).tolist() == [IPC] * N_CLASSES
    table = distill.load_privacy_filter(chosen)
    assert table["removed"].sum() == flagged.sum()
    card = json.loads(chosen.file(distill.PRODUCT).joinpath("data_card.json").read_text())
    assert card["source"]["privacy_filter"]["applied"] and card["source"]["privacy_filter"]["removed"] == flagged.sum()
    if nodes is not None:  # infodist: only the kept images were graph nodes
        assert set(nodes["pool_index"]) == set(np.flatnonzero(~flagged))


# --- (b) off: nothing removed, the plain selection, no dependence on the real data ------------


def test_with_the_filter_off_the_selection_is_the_plain_one(setup):
    s = setup
    cfg = select_cfg()
    chosen = distill.distill(cfg, s.pool, s.clf, cache_root=s.root)
    assert distill.load_privacy_filter(chosen) is None
    features = distill.load_features(distill.embed_pool("convnet", s.pool, s.clf, cache_root=s.root))
    plain = selection.select("infodist", features, s.labels, IPC, seed=cfg.seed, **distill.method_params(cfg))
    indices, labels, nodes, _ = distill.load_selection(chosen)
    np.testing.assert_array_equal(indices, plain.indices)
    np.testing.assert_array_equal(labels, plain.labels)
    pd.testing.assert_frame_equal(nodes, plain.nodes, check_dtype=False)
    assert len(nodes) == len(s.labels)  # the whole pool is offered
    card = json.loads(chosen.file(distill.PRODUCT).joinpath("data_card.json").read_text())
    assert card["source"]["privacy_filter"] == {"applied": False}

    # Without the filter the real splits are not read: passing them changes nothing.
    assert "data" not in json.loads(chosen.file(cache.CONFIG_FILE).read_text())["inputs"]
    assert distill.distill(cfg, s.pool, s.clf, cache_root=s.root, bundle=s.bundle).key == chosen.key


def test_the_filter_depends_on_the_real_data_and_needs_it(setup):
    s = setup
    cfg = select_cfg(method="random", privacy_filter=True)
    with pytest.raises(ValueError, match="pass the data bundle"):
        distill.distill(cfg, s.pool, s.clf, cache_root=s.root)
    on = distill.distill(cfg, s.pool, s.clf, cache_root=s.root, bundle=s.bundle)
    off = distill.distill(dataclasses.replace(cfg, privacy_filter=False), s.pool, s.clf, cache_root=s.root)
    other_data = dataclasses.replace(s.bundle, artifact=real_bundle(s.root, "other").artifact)
    again = distill.distill(cfg, s.pool, s.clf, cache_root=s.root, bundle=other_data)
    assert len({on.key, off.key, again.key}) == 3
    assert json.loads(on.file(cache.CONFIG_FILE).read_text())["inputs"]["data"] == s.bundle.artifact.key


# --- (c) indices point into the original pool -------------------------------------------------


def test_filtered_indices_and_nodes_point_into_the_whole_pool(setup):
    s = setup
    cfg = select_cfg(privacy_filter=True)
    chosen = distill.distill(cfg, s.pool, s.clf, cache_root=s.root, bundle=s.bundle)
    indices, labels, nodes, _ = distill.load_selection(chosen)
    kept = np.flatnonzero(~flagged_by_the_criterion(s))
    features = distill.load_features(distill.embed_pool("convnet", s.pool, s.clf, cache_root=s.root))
    on_kept = selection.select("infodist", features[kept], s.labels[kept], IPC, seed=cfg.seed,
                               **distill.method_params(cfg))
    np.testing.assert_array_equal(indices, kept[on_kept.indices])
    np.testing.assert_array_equal(s.labels[indices], labels)
    np.testing.assert_array_equal(nodes["pool_index"], kept[on_kept.nodes["pool_index"]])
    np.testing.assert_array_equal(s.labels[nodes["pool_index"]], nodes["label"])
    np.testing.assert_array_equal(np.sort(nodes.loc[nodes["selected"], "pool_index"]), np.sort(indices))
    for c in range(N_CLASSES):  # sorted within each class, classes in order
        part = indices[labels == c]
        assert (np.diff(part) > 0).all()
    exported = np.load(chosen.file(distill.PRODUCT) / "distilled.npz")["train_images"]
    np.testing.assert_array_equal(exported, s.images[indices])


# --- (d) an over-filtered class -------------------------------------------------------------


def test_a_class_left_with_fewer_than_ipc_images_is_named(tmp_path):
    root = tmp_path / "cache"
    bundle = real_bundle(root)
    images, labels, _ = planted_pool(bundle.splits["train"], copies={1: POOL_PER_CLASS - IPC + 1})
    pool, clf = pool_artifact(root, images, labels), judge_artifact(root)
    message = r"ipc=4: class 1 \(class 1\): \d of 16 pool images kept"
    with pytest.raises(privacy_filter.FilterError, match=message) as err:
        distill.distill(select_cfg(privacy_filter=True), pool, clf, cache_root=root, bundle=bundle)
    assert isinstance(err.value, ValueError) and "class 0" not in str(err.value)
    assert not any(p.name[0] != "." for p in (root / "selection").iterdir())  # nothing kept
    assert distill.distill(select_cfg(), pool, clf, cache_root=root)  # without the filter it selects


# --- (e) the ablation -------------------------------------------------------------------------


def test_the_privacy_filter_ablation_is_registered_and_compares_on_with_off():
    name = "privacy_filter"
    assert name in ablations.NAMES and name in ablations.BUILDERS and name in ablations.TITLES
    params = pd.DataFrame({"variant": ["filter off", "filter on"]})
    assert ablations.references(name, params, up=None) == {"filter on": "filter off"}
    assert ablations.references(name, params[:1], up=None) == {}  # "filter on" skipped: nothing to pair


def test_the_privacy_filter_ablation_builds_both_variants_from_the_runs_selections(setup):
    s = setup
    cfg = select_cfg()

    def select(pool=None, **changes):
        return distill.distill(dataclasses.replace(cfg, **changes), pool or s.pool, s.clf, cache_root=s.root,
                               bundle=s.bundle)

    up = SimpleNamespace(pool=s.pool, selection_cfg=cfg, select=select)
    base = DownstreamConfig(contrastive="none")
    jobs, params, notes = ablations.BUILDERS["privacy_filter"](up, base, AblationConfig(seeds=2), [0, 1])
    assert params["variant"].tolist() == ["filter off", "filter on"] and not notes
    assert params["pool images removed"].tolist() == [0, int(flagged_by_the_criterion(s).sum())]
    assert [(j.variant, j.cfg.seed) for j in jobs] == [("filter off", 0), ("filter off", 1),
                                                       ("filter on", 0), ("filter on", 1)]
    # "filter off" trains on the main table's InfoDist selections (selection seed + run), so its models are shared.
    assert [j.train_set.key for j in jobs[:2]] == [select(method="infodist", seed=i).key for i in (0, 1)]
    assert [j.train_set.key for j in jobs[2:]] == [select(method="infodist", seed=i, privacy_filter=True).key
                                                   for i in (0, 1)]


def test_the_val_side_of_an_ablation_pairs_runs_by_seed():
    """A default is chosen on val: each compared variant's val AUC against its reference's,
    run by run (by seed), never on the test metrics the ablation reports."""
    runs = pd.DataFrame({"variant": ["filter off"] * 3 + ["filter on"] * 3, "network": "convnet",
                         "seed": [0, 1, 2, 0, 1, 2], "val_auc": [0.80, 0.82, 0.84, 0.79, 0.83, 0.81]})
    result = ablations.Result("privacy_filter", runs, pd.DataFrame(), None, compared={"filter on": "filter off"})
    table = ablations.val_differences(result)
    row = table.iloc[0]
    assert (row["variant"], row["reference"], row["runs"]) == ("filter on", "filter off", 3)
    assert row["diff"] == pytest.approx((-0.01 + 0.01 - 0.03) / 3)
    assert (row["diff_min"], row["diff_max"]) == pytest.approx((-0.03, 0.01))
    assert row["val_auc"] == pytest.approx(0.81) and row["reference_val_auc"] == pytest.approx(0.82)


def test_a_planted_copy_is_caught_by_the_audit_without_the_filter_and_removed_with_it(setup):
    """The audit's calibrated near-copy test (pixels, thresholds from val) on the pool as it
    is flags every planted copy and fails; on the pool the filter keeps it finds nothing."""
    s = setup
    train, val = s.bundle.splits["train"], s.bundle.splits["val"]
    train_px = memorisation.pixel_vectors(train.images)
    thresholds = memorisation.copy_thresholds(
        memorisation.copy_ratios(memorisation.pixel_vectors(val.images), train_px)["ratios"], val.labels, N_CLASSES)

    def audited(rows: np.ndarray) -> dict:
        ratios = memorisation.copy_ratios(memorisation.pixel_vectors(s.images[rows]), train_px)["ratios"]
        return memorisation.calibrated_near_copies(ratios, s.labels[rows], thresholds)

    everything = np.arange(len(s.labels))
    off = audited(everything)
    assert set(s.planted.tolist()) <= set(off["flagged"].tolist()) and not off["passed"]
    judge = load_classifier(s.clf)
    keep, _ = privacy_filter.near_copy_filter(s.images, s.labels, s.bundle, lambda x: convnet.embed(judge, x))
    on = audited(everything[keep])
    assert on["statistic"] == 0 and on["passed"]
