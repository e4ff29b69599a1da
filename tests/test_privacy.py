"""The privacy audit's statistics: a planted leak must fail, an independent sample of the
same distribution must pass, the attack measures on hand-made cases with known answers."""

import numpy as np
import pytest
from conftest import make_images
from scipy import stats
from sklearn.metrics import roc_auc_score

from histodistill.privacy import measures


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
    ref = measures.reference(train, holdout)
    copying = measures.copying_test(planted, ref)
    assert not dcr["passed"] and dcr["statistic"] == 1.0 and dcr["threshold"] == pytest.approx(400 / 600)
    assert dcr["p_value"] < 1e-10
    assert not copies["passed"] and copies["statistic"] == 100
    assert not copying["passed"] and copying["statistic"] < -3
    # The reference's parts are the holdout's own distances and train's cells, as C_T needs them.
    np.testing.assert_array_equal(ref.holdout_distances, measures.nearest_neighbours(holdout, train)[0])
    assert ref.cells.n_clusters == 5
    # Distances the audit already has, passed in, give the same test.
    assert measures.copying_test(planted, ref, synthetic_distances=dcr["to_train"]) == copying
    with pytest.raises(ValueError, match="one given distance per synthetic row"):
        measures.copying_test(planted, ref, synthetic_distances=dcr["to_train"][:-1])


def test_an_independent_sample_of_the_same_distribution_passes(real):
    train, holdout = real
    fresh = population(100, 3)
    dcr = measures.dcr_share(fresh, train, holdout)
    copies = measures.near_copies(fresh, train)
    copying = measures.copying_test(fresh, measures.reference(train, holdout))
    assert dcr["passed"] and dcr["ci_low"] <= 400 / 600 <= dcr["ci_high"]
    assert copies["passed"] and copies["statistic"] == 0 and copies["ratios"].min() > 1 / 3
    assert copying["passed"] and abs(copying["statistic"]) < 2.5


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
    result = measures.copying_test(synthetic, measures.reference(train, holdout, cells=1))
    q = measures.nearest_neighbours(synthetic.astype(np.float32), train)[0]
    p = measures.nearest_neighbours(holdout.astype(np.float32), train)[0]
    u = stats.mannwhitneyu(q, p).statistic
    assert result["statistic"] == pytest.approx((u - 60 * 50 / 2) / np.sqrt(60 * 50 * 111 / 12))
    assert result["p_value"] == pytest.approx(stats.norm.cdf(result["statistic"]))


def test_membership_auc_on_a_hand_made_case():
    members, holdout = np.array([0.9, 0.8, 0.7, 0.2]), np.array([0.6, 0.5, 0.1, 0.0])
    result = measures.membership_auc(members, holdout, n_boot=500)
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
    result = measures.membership_auc(members, holdout, n_boot=300, seed=5)
    draws, labels = np.random.default_rng(5), np.r_[np.ones(80), np.zeros(50)]
    boots = []
    for _ in range(300):
        m, h = members[draws.integers(0, 80, 80)], holdout[draws.integers(0, 50, 50)]
        boots.append(roc_auc_score(labels, np.r_[m, h]))
    low, high = np.percentile(boots, [2.5, 97.5])
    assert result["ci_low"] == pytest.approx(low, abs=1e-12) and result["ci_high"] == pytest.approx(high, abs=1e-12)


def test_an_attack_without_signal_passes_and_one_with_signal_fails():
    rng = np.random.default_rng(0)
    none = measures.membership_auc(rng.normal(size=300), rng.normal(size=300))
    strong = measures.membership_auc(rng.normal(1.0, 1, 300), rng.normal(size=300))
    assert none["passed"] and none["ci_low"] < 0.5 < none["ci_high"]
    assert not strong["passed"] and strong["ci_low"] > 0.7


def test_loss_and_reference_scores():
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]])
    labels = np.array([0, 0, 1])
    np.testing.assert_allclose(measures.loss_scores(probs, labels), np.log([0.9, 0.3, 0.5]))
    np.testing.assert_allclose(measures.logit_confidence(probs, labels), np.log([9.0, 3 / 7, 1.0]))
    refs = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 2.0]])  # mean 1, 2, 2; std sqrt(2), sqrt(2), 0
    scores = measures.reference_scores(np.array([1.0, 2.0 + np.sqrt(2), 2.0]), refs)
    np.testing.assert_allclose(scores[:2], [0.0, 1.0])
    assert scores[2] == 0.0
    with pytest.raises(ValueError, match="at least two reference models"):
        measures.reference_scores(np.zeros(3), refs[:1])


def test_random_features_do_not_depend_on_what_they_embed_with():
    train, other = make_images(20, seed=0), make_images(6, seed=1)
    a = measures.random_features(other, train, seed=0)
    b = measures.random_features(np.concatenate([other, train[:3]]), train, seed=0)[:6]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, measures.random_features(other, train, seed=1))


def audit_table(distilled_passes: bool = True, control_caught: bool = True):
    import pandas as pd

    from histodistill.privacy import audit

    rows = [
        ("DCR share", "distilled (InfoDist)", "audited", "pixels", distilled_passes, "pass"),
        ("near-copies", "distilled (InfoDist)", "audited", "pixels", True, "pass"),
        ("near-copies", "planted train copies (control)", "control", "pixels", not control_caught, "fail"),
        ("MIA generator: denoising loss, t=100", "the run's generator", "audited", "model", True, "pass"),
    ]
    return pd.DataFrame([{**dict(zip(["test", "set", "role", "space", "passed", "expected"], r)),
                          "statistic": 0.5, "threshold": 0.5, "p_value": 0.3, "ci_low": float("nan"),
                          "ci_high": float("nan"), "tpr_at_1pct_fpr": float("nan"), "n": 10}
                         for r in rows], columns=audit.COLUMNS)


def test_the_verdict_names_failed_tests_and_missed_controls():
    from histodistill.privacy import report

    good = report.verdict(audit_table())
    assert good["passed"] and good["controls_caught"] and good["failed_tests"] == []
    bad = report.verdict(audit_table(distilled_passes=False, control_caught=False))
    assert not bad["passed"] and bad["failed_tests"] == ["DCR share / pixels"]
    assert bad["controls_missed"] == ["near-copies / planted train copies (control) / pixels"]
    text = report.verdict_text(bad)
    assert "FAILED the privacy audit: DCR share / pixels" in text and "controls not caught" in text


def test_the_card_carries_the_verdict_a_failure_included(tmp_path):
    import json

    from histodistill.privacy import report

    (tmp_path / "data_card.json").write_text(json.dumps({"method": "infodist", "n_images": 90}))
    table = audit_table(distilled_passes=False)
    report.write_card(tmp_path, table, report.verdict(table))
    card = json.loads((tmp_path / "data_card.json").read_text())
    assert card["method"] == "infodist"  # the rest of the card is kept
    assert card["audit"]["verdict"] == "FAILED" and card["audit"]["failed_tests"] == ["DCR share / pixels"]
    assert {t["test"] for t in card["audit"]["tests"]} == {"DCR share", "near-copies",
                                                           "MIA generator: denoising loss, t=100"}
    assert card["audit"]["tests"][0]["ci_low"] is None  # NaN written as null, valid JSON
    assert card["audit"]["code_version"].startswith("0.") and card["audit"]["date"]
    assert "| DCR share" in report.markdown(table)


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


def test_the_verdict_says_where_a_failed_distance_test_sits():
    import pandas as pd

    from histodistill.privacy import audit, report

    table = audit_table(distilled_passes=False)
    by_class = pd.DataFrame([
        {"set": "distilled (InfoDist)", "role": "audited", "space": "pixels", "class": c, "images": 10,
         "dcr_share": share, "dcr_ci_low": 0.0, "dcr_ci_high": 1.0, "dcr_p_value": p, "near_copies": n}
        for c, share, p, n in [("adipose", 0.5, 0.6, 0), ("background", 1.0, 0.001, 3)]], columns=audit.BY_CLASS_COLUMNS)
    result = report.verdict(table, by_class)
    assert not result["passed"]  # locating a failure does not excuse it
    assert result["where"] == {"pixels": ["DCR share: background 1.00 (p = 0.001)"]}
    assert "where, in pixels: DCR share: background 1.00" in report.verdict_text(result)
    assert report.verdict(audit_table(), by_class)["where"] == {}  # nothing failed, nothing to locate
    # Near-copies are located by class; a DCR excess no class carries alone is said to be spread.
    table.loc[table["test"] == "near-copies", "passed"] = False
    by_class["dcr_p_value"] = 0.5
    assert report.verdict(table, by_class)["where"]["pixels"] == [
        "near-copies: background 3", "DCR share: no class significant alone: spread over the set"]


def test_the_membership_attacks_score_all_members_or_a_seeded_sample():
    from histodistill.config import PrivacyConfig
    from histodistill.privacy.audit import member_sample

    np.testing.assert_array_equal(member_sample(50, PrivacyConfig(max_members=50)), np.arange(50))
    sample = member_sample(1000, PrivacyConfig(max_members=100, seed=3))
    assert len(sample) == 100 and len(np.unique(sample)) == 100
    assert np.all(np.diff(sample) > 0) and sample.min() >= 0 and sample.max() < 1000
    np.testing.assert_array_equal(sample, member_sample(1000, PrivacyConfig(max_members=100, seed=3)))
    assert not np.array_equal(sample, member_sample(1000, PrivacyConfig(max_members=100, seed=4)))
    with pytest.raises(ValueError, match="max_members"):
        PrivacyConfig(max_members=0)


def test_the_generator_attack_shows_progress_without_changing_its_losses(monkeypatch, capsys):
    """At the paper's sizes the generator's denoising losses are the audit's longest step
    (hundreds of thousands of denoiser passes): they get a bar, and the bar changes nothing."""
    import torch
    from diffusers import DDPMScheduler

    from histodistill import progress
    from histodistill.privacy import audit

    class Halving(torch.nn.Module):  # a stand-in denoiser: predicts half its input
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x, t, y):
            return self.scale * x

    latents = torch.randn(300, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    labels = np.arange(300) % 3
    args = (Halving(), DDPMScheduler(num_train_timesteps=1000), latents, labels, (10, 500), 2, 7)
    quiet = audit.denoising_losses(*args)
    monkeypatch.setenv(progress.MODE_VARIABLE, "lines")
    shown = audit.denoising_losses(*args, desc="generator: train")
    assert np.array_equal(quiet, shown) and quiet.shape == (2, 300)
    out = capsys.readouterr().out
    assert "generator: train: 100%" in out and "8/8" in out  # 2 draws x 2 timesteps x 2 batches of 256
