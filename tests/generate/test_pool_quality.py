"""Offline judges of a synthetic pool: Fréchet distance, k-NN precision/recall, nearest
neighbours, the per-class quality table and the memorisation (copying) check."""

import numpy as np
import pytest
from conftest import make_images

from histodistill.generate import memorisation, quality


def gaussian(n, dim, mean=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, dim)) + mean


# --- Fréchet distance -------------------------------------------------------------------


def test_fd_of_identical_sets_is_zero():
    a = gaussian(500, 16, seed=1) * 10.0  # scale 10: variances ~100
    assert abs(quality.frechet_distance(a, a)) < 1e-6 * 100


def test_fd_of_shifted_gaussians_is_squared_shift():
    m = np.linspace(0.5, 1.5, 8)  # ||m||^2 = 8.57
    a, b = gaussian(20000, 8, seed=1), gaussian(20000, 8, mean=m, seed=2)
    fd = quality.frechet_distance(a, b)
    assert fd == pytest.approx(m @ m, rel=0.05)


def sqrtm_reference(a, b):
    """The textbook formula with scipy's matrix square root (pytorch-fid's), for checking."""
    import scipy.linalg

    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(np.real(scipy.linalg.sqrtm(s_a @ s_b))))


@pytest.mark.parametrize("n_a, n_b, dim", [(300, 200, 32), (40, 60, 16), (500, 30, 8)])
def test_fd_equals_the_sqrtm_formula(n_a, n_b, dim):
    rng = np.random.default_rng(dim)
    mix = rng.normal(size=(dim, dim))  # correlated features
    a, b = gaussian(n_a, dim, seed=1) @ mix, gaussian(n_b, dim, mean=0.4, seed=2) @ mix.T
    assert quality.frechet_distance(a, b) == pytest.approx(sqrtm_reference(a, b), rel=1e-7)


def test_fd_with_fewer_samples_than_dimensions_is_exact():
    # sqrtm of the singular product is unreliable; the spectral form needs no offset and
    # equals the formula on the subspace the samples span: embed 8-D data in 64 dimensions.
    a8, b8 = gaussian(20, 8, seed=1), gaussian(30, 8, mean=0.5, seed=2)
    basis = np.linalg.qr(np.random.default_rng(0).normal(size=(64, 8)))[0]  # orthonormal columns
    fd = quality.frechet_distance(a8 @ basis.T, b8 @ basis.T)
    assert fd == pytest.approx(sqrtm_reference(a8, b8), rel=1e-7)
    a, b = gaussian(20, 64, seed=1), gaussian(20, 64, mean=0.5, seed=2)
    assert np.isfinite(quality.frechet_distance(a, b))
    assert abs(quality.frechet_distance(a, a)) < 1e-9


def test_fd_with_dead_units_and_float32():
    a = gaussian(300, 32, seed=1).astype(np.float32)
    b = gaussian(300, 32, mean=0.3, seed=2).astype(np.float32)
    a[:, :4] = b[:, :4] = 0.0  # constant features: singular covariances despite N > D
    fd = quality.frechet_distance(a, b)
    assert fd == pytest.approx(quality.frechet_distance(a[:, 4:], b[:, 4:]), rel=1e-6)


def test_fd_rejects_too_few_samples_and_mismatched_dims():
    with pytest.raises(ValueError, match="at least 2"):
        quality.frechet_distance(gaussian(1, 4), gaussian(10, 4))
    with pytest.raises(ValueError, match="dimension"):
        quality.frechet_distance(gaussian(10, 4), gaussian(10, 5))


# --- precision / recall -----------------------------------------------------------------


def test_precision_recall_of_identical_sets_is_one():
    a = gaussian(300, 10, seed=3)
    assert quality.precision_recall(a, a) == (1.0, 1.0)


def test_precision_recall_of_separated_sets_is_zero():
    real, fake = gaussian(200, 10, seed=3), gaussian(200, 10, mean=100.0, seed=4)
    assert quality.precision_recall(real, fake) == (0.0, 0.0)


def test_subset_of_real_has_full_precision():
    real = gaussian(300, 10, seed=3)
    precision, recall = quality.precision_recall(real, real[::10])
    assert precision == 1.0 and recall < 1.0  # 30 samples cannot cover 300


def test_precision_recall_same_with_any_chunk_size():
    real, fake = gaussian(90, 6, seed=5), gaussian(70, 6, mean=0.7, seed=6)
    expected = quality.precision_recall(real, fake, k=3, chunk_size=4096)
    assert 0 < expected[0] < 1 and 0 < expected[1] < 1  # a case where membership matters
    for chunk in (2, 7, 64):
        assert quality.precision_recall(real, fake, k=3, chunk_size=chunk) == expected


def test_precision_recall_radius_excludes_the_point_itself():
    # 1-D points 0, 1, 3: with k=1 their radii are 1, 1, 2, so 4.5 is inside the ball
    # around 3 and 5.5 outside; had a point counted as its own neighbour, all radii were 0.
    real = np.array([[0.0], [1.0], [3.0]])
    assert quality.precision_recall(real, np.array([[4.5], [5.5]]), k=1)[0] == 0.5
    assert quality.precision_recall(real, np.array([[0.5], [5.0]]), k=1)[0] == 1.0  # 5 is on the edge


def test_precision_recall_clamps_k_for_tiny_sets():
    real, fake = gaussian(3, 4, seed=1), gaussian(2, 4, seed=2)
    precision, recall = quality.precision_recall(real, fake, k=10)
    assert 0 <= precision <= 1 and 0 <= recall <= 1
    with pytest.raises(ValueError, match="at least 2"):
        quality.precision_recall(real, fake[:1])


# --- nearest neighbours -----------------------------------------------------------------


def test_nearest_neighbours_matches_brute_force():
    query, ref = gaussian(257, 12, seed=7), gaussian(301, 12, seed=8)
    dist, idx = quality.nearest_neighbours(query, ref, batch_size=50)
    full = np.sqrt(((query[:, None, :] - ref[None, :, :]) ** 2).sum(-1))
    np.testing.assert_array_equal(idx, full.argmin(1))
    np.testing.assert_allclose(dist, full.min(1), rtol=1e-10, atol=1e-12)
    assert dist.shape == idx.shape == (257,) and idx.dtype == np.int64


# --- quality table ----------------------------------------------------------------------


def test_quality_table_rows_columns_and_nan_for_single_sample():
    names = ["adipose", "mucus", "tumour"]
    train_y, val_y = np.repeat([0, 1, 2], 40), np.repeat([0, 1, 2], 30)
    pool_y = np.array([0] * 30 + [1] * 30 + [2])  # a single "tumour" image in the pool
    train = gaussian(len(train_y), 5, seed=1) + train_y[:, None]
    val = gaussian(len(val_y), 5, seed=2) + val_y[:, None]
    pool = gaussian(len(pool_y), 5, seed=3) + pool_y[:, None]
    table = quality.quality_table(train, train_y, val, val_y, pool, pool_y, names)
    assert list(table.columns) == [
        "class", "n_pool", "n_train", "fd_pool_vs_val", "precision_pool", "recall_pool",
        "fd_train_vs_val", "precision_train", "recall_train",
    ]
    assert table["class"].tolist() == names + ["all"]
    # Sizes matched per class: 30 of train's 40 against the pool's 30; tumour's floor uses 2.
    assert table["n_pool"].tolist() == [30, 30, 1, 61]
    assert table["n_train"].tolist() == [30, 30, 2, 62]
    tumour = table.set_index("class").loc["tumour"]
    assert np.isnan(tumour["fd_pool_vs_val"]) and np.isnan(tumour["precision_pool"])
    assert np.isfinite(tumour["fd_train_vs_val"])  # the real-vs-real floor is still there
    assert table.drop(index=2).drop(columns="class").notna().all().all()


# --- memorisation -----------------------------------------------------------------------


def test_memorisation_finds_exact_copies_in_features_and_pixels():
    train_px, fresh_px = make_images(120, size=8, seed=1), make_images(30, size=8, seed=3)
    # val: unseen images that resemble train ones ("close but not copied"); the fresh pool
    # images are unrelated to train, so only the copies fall below val's 1st percentile.
    noise = np.random.default_rng(2).integers(-12, 13, (60, 8, 8, 3))
    val_px = np.clip(train_px[60:].astype(int) + noise, 0, 255).astype(np.uint8)
    copied = np.array([5, 17, 99])  # train images the "generator" copied
    pool_px = np.concatenate([fresh_px[:10], train_px[copied], fresh_px[10:]])
    copy_pos = np.array([10, 11, 12])  # where the copies sit in the pool

    def feats(px):  # a fixed random projection standing in for the ConvNet
        proj = np.random.default_rng(0).normal(size=(8 * 8 * 3, 16)).astype(np.float32)
        return (px.reshape(len(px), -1).astype(np.float32) / 255) @ proj

    result = memorisation.memorisation(
        feats(pool_px), feats(train_px), feats(val_px), pool_px, train_px, val_px
    )
    assert set(result) == {"features", "pixels"}
    for space in ("features", "pixels"):
        r = result[space]
        assert r["pool_distances"].shape == r["pool_nearest"].shape == (33,)
        assert r["val_distances"].shape == (60,)
        # Pixels are exact: a copy is at distance 0. Features come from a matrix product, whose
        # BLAS kernel may round a row differently with its position in the batch (measured on
        # an AMD EPYC: 6e-6 and 1e-5 for rows of norm ~10), so there a copy is within 1e-4.
        if space == "pixels":
            np.testing.assert_array_equal(r["pool_distances"][copy_pos], 0.0)
        else:
            np.testing.assert_allclose(r["pool_distances"][copy_pos], 0.0, atol=1e-4)
        np.testing.assert_array_equal(r["pool_nearest"][copy_pos], copied)
        assert r["threshold"] == pytest.approx(np.percentile(r["val_distances"], 1.0))
        assert r["n_below"] == 3 and r["share_below"] == pytest.approx(3 / 33)
        pairs = memorisation.closest_pairs(result, space, n=4)
        assert [(p, t) for p, t, _ in pairs[:3]] == list(zip(copy_pos.tolist(), copied.tolist()))
        assert [d for _, _, d in pairs[:3]] == pytest.approx([0.0, 0.0, 0.0], abs=1e-4) and pairs[3][2] > 0.01
    # The val-to-train distances computed once (as a sweep does) give the same result.
    reference = memorisation.val_to_train(feats(train_px), feats(val_px), train_px, val_px)
    again = memorisation.memorisation(feats(pool_px), feats(train_px), feats(val_px), pool_px, train_px, val_px,
                                 val_distances=reference)
    for space in ("features", "pixels"):
        for key, value in result[space].items():
            np.testing.assert_array_equal(again[space][key], value)
    with pytest.raises(ValueError, match="59 given val distances for 60 val images"):
        memorisation.memorisation(feats(pool_px), feats(train_px), feats(val_px),
                             val_distances={"features": reference["features"][:59]})


def test_memorisation_features_only_and_pixel_arguments_together():
    train, val, pool = gaussian(50, 4, seed=1), gaussian(20, 4, seed=2), gaussian(10, 4, seed=3)
    result = memorisation.memorisation(pool, train, val)
    assert set(result) == {"features"}
    assert len(memorisation.closest_pairs(result, n=100)) == 10
    with pytest.raises(ValueError, match="together"):
        memorisation.memorisation(pool, train, val, pool_pixels=make_images(10, size=4))
    with pytest.raises(KeyError):
        memorisation.closest_pairs(result, "pixels")


def test_quality_table_measures_pool_and_floor_at_the_same_size():
    names = ["a", "b"]
    train_y, val_y, pool_y = np.repeat([0, 1], [20, 35]), np.repeat([0, 1], 15), np.repeat([0, 1], 100)
    feats = lambda y, seed: gaussian(len(y), 4, seed=seed) + 3 * y[:, None]  # noqa: E731
    table = quality.quality_table(feats(train_y, 1), train_y, feats(val_y, 2), val_y, feats(pool_y, 3), pool_y, names)
    assert table["n_pool"].tolist() == table["n_train"].tolist() == [20, 35, 55]
    unmatched = quality.quality_table(feats(train_y, 1), train_y, feats(val_y, 2), val_y, feats(pool_y, 3), pool_y,
                                      names, match_sizes=False)
    assert unmatched["n_pool"].tolist() == [100, 100, 200] and unmatched["n_train"].tolist() == [20, 35, 55]


def test_class_consistency_on_a_hand_made_case():
    names = ["a", "b", "c"]
    pool_y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pool_pred = np.array([0, 0, 0, 1, 1, 1, 0, 0])  # a: 3/4, b: 2/2, c: 0/2
    val_y, val_pred = np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1])  # a: 1, b: 1, c: 1/2
    table, confusion = quality.class_consistency(pool_pred, pool_y, val_pred, val_y, names)
    assert table["class"].tolist() == names + ["mean over classes"]
    np.testing.assert_allclose(table["pool_accuracy"], [0.75, 1.0, 0.0, 1.75 / 3])
    np.testing.assert_allclose(table["val_accuracy"], [1.0, 1.0, 0.5, 2.5 / 3])
    assert table["n_pool"].tolist() == [4, 2, 2, 8]
    assert confusion.loc["a"].tolist() == [3, 1, 0] and confusion.loc["c"].tolist() == [2, 0, 0]
    assert confusion.values.sum() == len(pool_y)


def test_memorisation_summary_has_one_row_per_space():
    train_px, val_px = make_images(40, size=6, seed=1), make_images(20, size=6, seed=2)
    pool_px = train_px[:5].copy()  # five exact copies
    feats = lambda px: px.reshape(len(px), -1).astype(float)  # noqa: E731
    result = memorisation.memorisation(feats(pool_px), feats(train_px), feats(val_px), pool_px, train_px, val_px)
    summary = memorisation.memorisation_summary(result)
    assert summary["space"].tolist() == ["features", "pixels"]
    assert summary["n_below"].tolist() == [5, 5] and summary["median_pool_distance"].tolist() == [0.0, 0.0]
    assert summary["expected_below_if_unseen"].tolist() == pytest.approx([0.05, 0.05])  # 1 % of 5
    by_class = memorisation.memorisation_summary(result, np.array([0, 0, 1, 1, 1]), ["a", "b"])
    assert by_class["flagged_by_class"].tolist() == ["a: 2; b: 3"] * 2
