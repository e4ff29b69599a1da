"""The privacy audit's statistics: a planted leak must fail, an independent sample of the
same distribution must pass, the attack measures on hand-made cases with known answers."""

import numpy as np
import pytest
from conftest import make_images
from scipy import stats
from sklearn.metrics import roc_auc_score

from histodistill.generate import memorisation
from histodistill.privacy import measures
from histodistill.privacy import membership
from histodistill.privacy import copying


def population(n: int, seed: int, dim: int = 8) -> np.ndarray:
    """Draws of one distribution: a mixture of four Gaussian blobs."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 4, (4, dim))
    return (centres[rng.integers(0, 4, n)] + rng.normal(0, 1, (n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def real():
    data = population(600, 1)
    return data[:400], data[400:]  # train (members), holdout


def test_a_planted_leak_fails_dcr_near_copies_and_c_t(real):
    train, holdout = real
    rng = np.random.default_rng(2)
    planted = train[rng.choice(len(train), 100, replace=False)] + rng.normal(0, 0.01, (100, train.shape[1]))
    dcr = measures.dcr_share(planted, train, holdout)
    copies = measures.near_copies(planted, train)
    ref = copying.reference(train, holdout)
    c_t = copying.copying_test(planted, ref)
    assert not dcr["passed"] and dcr["statistic"] == 1.0 and dcr["threshold"] == pytest.approx(400 / 600)
    assert dcr["p_value"] < 1e-10
    assert not copies["passed"] and copies["statistic"] == 100
    assert not c_t["passed"] and c_t["statistic"] < -3
    # The reference's parts are the holdout's own distances and train's cells, as C_T needs them.
    np.testing.assert_array_equal(ref.holdout_distances, measures.nearest_neighbours(holdout, train)[0])
    assert ref.cells.n_clusters == 5
    # Distances the audit already has, passed in, give the same test.
    assert copying.copying_test(planted, ref, synthetic_distances=dcr["to_train"]) == c_t
    with pytest.raises(ValueError, match="one given distance per synthetic row"):
        copying.copying_test(planted, ref, synthetic_distances=dcr["to_train"][:-1])


def test_an_independent_sample_of_the_same_distribution_passes(real):
    train, holdout = real
    fresh = population(100, 3)
    dcr = measures.dcr_share(fresh, train, holdout)
    copies = measures.near_copies(fresh, train)
    c_t = copying.copying_test(fresh, copying.reference(train, holdout))
    assert dcr["passed"] and dcr["ci_low"] <= 400 / 600 <= dcr["ci_high"]
    assert copies["passed"] and copies["statistic"] == 0 and copies["ratios"].min() > 1 / 3
    assert c_t["passed"] and abs(c_t["statistic"]) < 2.5


def test_dcr_share_counts_by_hand():
    train = np.array([[0.0], [10.0], [20.0]])
    holdout = np.array([[1.0], [30.0], [40.0]])
    synthetic = np.array([[0.2], [9.0], [29.0], [0.5]])  # train, train, holdout, tie (0.5 from both)
    result = measures.dcr_share(synthetic, train, holdout)
    assert (result["n"], result["ties"]) == (3, 1) and result["threshold"] == 0.5  # equal sizes
    assert result["statistic"] == pytest.approx(2 / 3)
    assert result["p_value"] == pytest.approx(stats.binomtest(2, 3, 0.5, alternative="greater").pvalue)


def test_near_copy_ratio_by_hand():
    train = np.array([[0.0], [10.0], [11.0], [12.0]])
    result = measures.near_copies(np.array([[1.0], [11.0]]), train, neighbours=3)
    # first: nearest 1, three nearest 1, 9, 10 -> 1 / (20 / 3) = 0.15; second: 0, 1, 1 -> 0
    np.testing.assert_allclose(result["ratios"], [0.15, 0.0])
    assert result["statistic"] == 2 and result["flagged_nearest"].tolist() == [0, 2]


def test_c_t_is_the_mann_whitney_z_in_one_cell():
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (200, 2)).astype(np.float32)
    holdout, synthetic = rng.normal(0, 1, (50, 2)), rng.normal(0, 1, (60, 2))
    result = copying.copying_test(synthetic, copying.reference(train, holdout, cells=1))
    q = measures.nearest_neighbours(synthetic.astype(np.float32), train)[0]
    p = measures.nearest_neighbours(holdout.astype(np.float32), train)[0]
    u = stats.mannwhitneyu(q, p).statistic
    assert result["statistic"] == pytest.approx((u - 60 * 50 / 2) / np.sqrt(60 * 50 * 111 / 12))
    assert result["p_value"] == pytest.approx(stats.norm.cdf(result["statistic"]))


def test_membership_auc_on_a_hand_made_case():
    members, holdout = np.array([0.9, 0.8, 0.7, 0.2]), np.array([0.6, 0.5, 0.1, 0.0])
    result = membership.membership_auc(members, holdout, n_boot=500)
    assert result["statistic"] == pytest.approx(14 / 16)  # 14 of 16 pairs ordered right
    assert result["statistic"] == pytest.approx(roc_auc_score([1] * 4 + [0] * 4, np.r_[members, holdout]))
    assert result["ci_low"] <= result["statistic"] <= result["ci_high"]
    assert result["tpr_at_1pct_fpr"] == 0.75  # three members above every holdout score


def test_membership_auc_interval_equals_scikit_learn_on_each_resample():
    """The bootstrap weighs each resample's counts (`metrics.weighted_auc`) instead of calling
    `roc_auc_score` per resample: the same resamples (the same draws, in the same order) give
    the same interval, ties included."""
    rng = np.random.default_rng(3)
    members, holdout = np.round(rng.normal(0.3, 1, 80), 1), np.round(rng.normal(0, 1, 50), 1)  # many ties
    result = membership.membership_auc(members, holdout, n_boot=300, seed=5)
    draws, labels = np.random.default_rng(5), np.r_[np.ones(80), np.zeros(50)]
    boots = []
    for _ in range(300):
        m, h = members[draws.integers(0, 80, 80)], holdout[draws.integers(0, 50, 50)]
        boots.append(roc_auc_score(labels, np.r_[m, h]))
    low, high = np.percentile(boots, [2.5, 97.5])
    assert result["ci_low"] == pytest.approx(low, abs=1e-12) and result["ci_high"] == pytest.approx(high, abs=1e-12)


def test_an_attack_without_signal_passes_and_one_with_signal_fails():
    rng = np.random.default_rng(0)
    none = membership.membership_auc(rng.normal(size=300), rng.normal(size=300))
    strong = membership.membership_auc(rng.normal(1.0, 1, 300), rng.normal(size=300))
    assert none["passed"] and none["ci_low"] < 0.5 < none["ci_high"]
    assert not strong["passed"] and strong["ci_low"] > 0.7


def test_loss_and_reference_scores():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    labels = np.array([0, 0, 1])
    np.testing.assert_allclose(membership.loss_scores(probs, labels), np.log([0.9, 0.3, 0.5]))
    np.testing.assert_allclose(membership.logit_confidence(probs, labels), np.log([9.0, 3 / 7, 1.0]))
    refs = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 2.0]])  # mean 1, 2, 2; std sqrt(2), sqrt(2), 0
    scores = membership.reference_scores(np.array([1.0, 2.0 + np.sqrt(2), 2.0]), refs)
    np.testing.assert_allclose(scores[:2], [0.0, 1.0])
    assert scores[2] == 0.0
    with pytest.raises(ValueError, match="at least two reference models"):
        membership.reference_scores(np.zeros(3), refs[:1])


def test_random_features_do_not_depend_on_what_they_embed_with():
    train, other = make_images(20, seed=0), make_images(6, seed=1)
    a = measures.random_features(other, train, seed=0)
    b = measures.random_features(np.concatenate([other, train[:3]]), train, seed=0)[:6]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, measures.random_features(other, train, seed=1))


def test_the_per_class_breakdown_puts_the_evidence_where_the_copies_are(real):
    """Copies planted in one class only: that class holds every near-copy and a DCR share
    significantly above the null; the independent classes do not, and the per-class counts
    add up to the whole-set test's."""
    train, holdout = real
    rng = np.random.default_rng(4)
    fresh = population(60, 5)
    planted = train[rng.choice(len(train), 30, replace=False)] + rng.normal(0, 0.01, (30, train.shape[1]))
    synthetic = np.concatenate([fresh, planted])
    labels = np.r_[np.repeat([0, 1], 30), np.full(30, 2)]
    dcr, copies = measures.dcr_share(synthetic, train, holdout), measures.near_copies(synthetic, train)
    rows = {r["class"]: r for r in measures.by_class(labels, dcr, copies, ["a", "b", "copied", "absent"])}
    assert set(rows) == {"a", "b", "copied"}  # a class without images has no row
    assert rows["copied"]["near_copies"] == 30 and rows["copied"]["dcr_share"] == 1.0
    assert rows["copied"]["dcr_p_value"] < 1e-4 and rows["copied"]["dcr_ci_low"] > dcr["threshold"]
    # An independent draw is a near-copy only by chance (1 of these 60 is, at this seed).
    assert rows["a"]["near_copies"] + rows["b"]["near_copies"] <= 2
    assert rows["a"]["dcr_p_value"] > measures.ALPHA and rows["b"]["dcr_p_value"] > measures.ALPHA
    assert sum(r["near_copies"] for r in rows.values()) == copies["statistic"]
    assert sum(r["images"] for r in rows.values()) == len(synthetic)


# --- the calibrated near-copy test and the negative controls -------------------------------------


def tiles(n: int, seed: int, uniform: bool, size: int = 6) -> np.ndarray:
    """uint8 tiles (n, size, size, 3): near-uniform ones (one grey level each, the background
    class) or textured ones (independent pixels around a class colour)."""
    rng = np.random.default_rng(seed)
    if uniform:
        level = rng.normal(200, 20, (n, 1, 1, 1))
        return np.clip(level + rng.normal(0, 0.5, (n, size, size, 3)), 0, 255).round().astype(np.uint8)
    return np.clip(rng.normal(120, 40, (n, size, size, 3)), 0, 255).round().astype(np.uint8)


def two_classes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.concatenate([tiles(n, seed, uniform=True), tiles(n, seed + 100, uniform=False)])
    return memorisation.pixel_vectors(images), np.repeat([0, 1], n)


def test_the_calibrated_null_is_the_exact_count_of_rows_under_the_first_unseen_one():
    """Three unseen ratios, two audited rows, the threshold the smallest unseen ratio: of the
    ten orders of five exchangeable values, 6 put no audited row first, 3 one and 1 both, so
    the p-values of 0, 1 and 2 flagged rows are 1, 0.4 and 0.1."""
    thresholds = memorisation.copy_thresholds(np.array([0.5, 0.6, 0.7]), np.zeros(3, int), 1, quantile=0.01)
    assert thresholds.order.tolist() == [1] and thresholds.thresholds.tolist() == [0.5]
    assert thresholds.null_rate().tolist() == pytest.approx([0.25])
    for ratios, count, p in (([0.9, 0.8], 0, 1.0), ([0.4, 0.8], 1, 0.4), ([0.1, 0.2], 2, 0.1)):
        result = memorisation.calibrated_near_copies(np.array(ratios), np.zeros(2, int), thresholds)
        assert result["statistic"] == count and result["p_value"] == pytest.approx(p)
        assert result["expected"] == pytest.approx(0.6 * 0 + 0.3 * 1 + 0.1 * 2)
    # A class without unseen images has no threshold and flags nothing; the order grows with the quantile.
    wide = memorisation.copy_thresholds(np.linspace(0, 1, 199), np.zeros(199, int), 2, quantile=0.05)
    assert wide.order.tolist() == [10, 0] and np.isnan(wide.thresholds[1])
    assert not wide.flags(np.array([0.0]), np.array([1])).any()


def test_the_calibrated_test_spares_unseen_uniform_tiles_that_carlinis_ratio_flags():
    """Near-uniform tiles no model saw sit under Carlini's fixed 1/3 (each has a train tile of
    almost its colour); calibrated on other unseen tiles of their class, they pass, while
    eight planted train copies among them are each flagged and fail the set (three would
    not: about 1.4 of 88 images are flagged by chance here, at one threshold per class from
    60 unseen images)."""
    train, train_y = two_classes(150, 0)
    unseen, unseen_y = two_classes(60, 1)
    fresh, fresh_y = two_classes(40, 2)
    ratios = memorisation.copy_ratios(unseen, train)["ratios"]
    thresholds = memorisation.copy_thresholds(ratios, unseen_y, 2)
    carlini = measures.near_copies(fresh, train)
    assert np.sum(carlini["flagged"] < 40) >= 10 and np.all(carlini["flagged"] < 40)  # only the uniform class
    calibrated = memorisation.calibrated_near_copies(carlini["ratios"], fresh_y, thresholds)
    assert calibrated["passed"] and calibrated["statistic"] <= 3
    planted = np.concatenate([fresh, train[[3, 5, 7, 9, 160, 161, 162, 163]]])
    planted_y = np.r_[fresh_y, 0, 0, 0, 0, 1, 1, 1, 1]
    caught = memorisation.calibrated_near_copies(memorisation.copy_ratios(planted, train)["ratios"], planted_y, thresholds)
    assert set(range(len(fresh), len(planted))) <= set(caught["flagged"].tolist()) and not caught["passed"]
    # The breakdown names the uniform class low-information, the textured one not.
    dcr = measures.dcr_share(fresh, train, unseen)
    unseen_info = {"labels": unseen_y, "ratios": ratios, "thresholds": thresholds,
                   "distances": measures.nearest_neighbours(unseen, train)[0]}
    rows = measures.by_class(fresh_y, dcr, calibrated, ["background", "tissue"], carlini, unseen_info)
    assert [r["low_information"] for r in rows] == [True, False]
    assert rows[0]["carlini_near_copies"] >= 10 and rows[1]["carlini_near_copies"] == 0
    assert rows[0]["near_copy_threshold"] < 1 / 3 < rows[1]["near_copy_threshold"]
    # C_T within each class: an independent draw is not nearer train than unseen images;
    # a class of copies is, and strongly.
    assert all(r["c_t_p_value"] > measures.ALPHA for r in rows)
    copied = np.concatenate([fresh[fresh_y == 0], train[train_y == 1][:40]])
    copied_y = np.repeat([0, 1], 40)
    copied_dcr = measures.dcr_share(copied, train, unseen)
    found = memorisation.calibrated_near_copies(memorisation.copy_ratios(copied, train)["ratios"], copied_y, thresholds)
    rows = measures.by_class(copied_y, copied_dcr, found, ["background", "tissue"], None, unseen_info)
    assert rows[0]["c_t_p_value"] > measures.ALPHA and rows[1]["c_t_z"] < -5 and rows[1]["c_t_p_value"] < 1e-6


def test_c_t_over_several_cells_equals_the_mann_whitney_reference():
    """C_T from each row's share of its cell's U (`_copying_parts`) equals the statistic
    computed cell by cell with scipy's Mann-Whitney U, ties included."""
    rng = np.random.default_rng(5)
    train = np.round(rng.normal(0, 1, (300, 2)), 1).astype(np.float32)
    holdout, synthetic = np.round(rng.normal(0, 1, (120, 2)), 1), np.round(rng.normal(0, 1.1, (90, 2)), 1)
    ref = copying.reference(train, holdout, cells=4)
    result = copying.copying_test(synthetic, ref)
    q_dist, p_dist = measures.nearest_neighbours(synthetic.astype(np.float32), train)[0], ref.holdout_distances
    q_cell, p_cell = ref.cells.predict(synthetic.astype(np.float32)), ref.holdout_cells
    z, w = [], []
    for c in range(4):
        q, p = q_dist[q_cell == c], p_dist[p_cell == c]
        if len(q) < max(1, 0.05 * len(synthetic)) or len(p) == 0:
            continue
        u = stats.mannwhitneyu(q, p).statistic
        z.append((u - len(q) * len(p) / 2) / np.sqrt(len(q) * len(p) * (len(q) + len(p) + 1) / 12))
        w.append(len(p) / len(holdout))
    w = np.array(w) / np.sum(w)
    assert result["statistic"] == pytest.approx(float(np.dot(w, z)), rel=1e-9, abs=1e-12)
    assert result["cells_used"] == len(z)
    # Leaving holdout rows out is the reference built without them.
    fewer = ref.without(np.arange(10))
    np.testing.assert_array_equal(fewer.holdout, ref.holdout[10:])
    np.testing.assert_array_equal(fewer.holdout_cells, ref.cells.predict(ref.holdout[10:]))


def test_a_selected_set_is_read_against_the_same_selection_of_unseen_images(real):
    """Two independent samples differ by nothing detectable; planted copies read against
    unseen images lie detectably nearer train, in DCR share and C_T alike."""
    train, holdout = real
    ref = copying.reference(train, holdout)
    fresh, other = population(80, 7), population(80, 8)
    labels = np.arange(80) % 4
    same = copying.versus_selected_unseen(fresh, labels, other, labels, ref, n_boot=300)
    assert set(same) == {"DCR share", "data-copying C_T"}
    for result in same.values():
        assert result["passed"] and result["ci_low"] <= 0 <= result["ci_high"]
        assert result["ci_low"] <= result["statistic"] <= result["ci_high"]
    rng = np.random.default_rng(9)
    copies = train[rng.choice(len(train), 80, replace=False)] + rng.normal(0, 0.01, (80, train.shape[1]))
    leak = copying.versus_selected_unseen(copies, labels, other, labels, ref, n_boot=300)
    assert not leak["DCR share"]["passed"] and leak["DCR share"]["ci_low"] > 0.1
    assert not leak["data-copying C_T"]["passed"] and leak["data-copying C_T"]["ci_high"] < 0
