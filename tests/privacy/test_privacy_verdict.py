"""The privacy audit's controls and verdict: which sets it compares, how each row of its
table is read (a test a negative control fails does not count; DCR share and C_T of a
selected set are read against the same selection of unseen images; a filtered set's own
criterion passes by construction), the verdict, the data card and the attacks' plumbing."""

import numpy as np
import pytest

from histodistill.generate import memorisation
from histodistill.privacy import generator_attack


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
    from histodistill.privacy.config import PrivacyConfig
    from histodistill.privacy.controls import member_sample

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

    class Halving(torch.nn.Module):  # a stand-in denoiser: predicts half its input
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x, t, y):
            return self.scale * x

    latents = torch.randn(300, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    labels = np.arange(300) % 3
    args = (Halving(), DDPMScheduler(num_train_timesteps=1000), latents, labels, (10, 500), 2, 7)
    quiet = generator_attack.denoising_losses(*args)
    monkeypatch.setenv(progress.MODE_VARIABLE, "lines")
    shown = generator_attack.denoising_losses(*args, desc="generator: train")
    assert np.array_equal(quiet, shown) and quiet.shape == (2, 300)
    out = capsys.readouterr().out
    assert "generator: train: 100%" in out and "8/8" in out  # 2 draws x 2 timesteps x 2 batches of 256


def readings_table(negative_near_copies=True, distilled_dcr=False, versus_dcr=True, generator_negative=True):
    """An audit table: the distilled set failing or passing DCR share (pixels) and its
    reading against the selected unseen images, near-copies failing (pixels), and the
    negative controls of both."""
    import pandas as pd

    from histodistill.privacy import audit

    rows = [
        ("DCR share", "distilled (InfoDist)", "audited", "pixels", distilled_dcr),
        ("near-copies", "distilled (InfoDist)", "audited", "pixels", False),
        ("DCR share vs selected unseen real", "distilled (InfoDist)", "audited", "pixels", versus_dcr),
        ("DCR share", "random unseen real (control)", "negative control", "pixels", True),
        ("near-copies", "random unseen real (control)", "negative control", "pixels", negative_near_copies),
        ("DCR share", "selected unseen real (control)", "negative control", "pixels", False),
        ("near-copies", "selected unseen real (control)", "negative control", "pixels", True),
        ("near-copies", "planted train copies (control)", "control", "pixels", False),
        ("MIA generator: denoising loss, t=20", "the run's generator", "audited", "model", True),
        ("MIA generator: denoising loss, t=20", "unseen vs unseen real (control)", "negative control", "model",
         generator_negative),
    ]
    table = pd.DataFrame([{**dict(zip(["test", "set", "role", "space", "passed"], r)),
                           "expected": "fail" if r[2] == "control" else "pass", "statistic": 3.0, "threshold": 0.5,
                           "p_value": 0.01, "ci_low": 0.1, "ci_high": 0.3, "tpr_at_1pct_fpr": float("nan"), "n": 10,
                           "carlini_near_copies": float("nan"), "reading": ""} for r in rows], columns=audit.COLUMNS)
    return table


def test_a_test_its_negative_control_fails_does_not_count():
    from histodistill.privacy import controls, report

    counted = report.verdict(controls.annotate(readings_table()))
    assert not counted["passed"] and counted["failed_tests"] == ["near-copies / pixels"]
    assert "unseen real (val) images" in counted["details"][0]
    uncalibrated = controls.annotate(readings_table(negative_near_copies=False))
    row = uncalibrated[(uncalibrated["set"] == "distilled (InfoDist)") & (uncalibrated["test"] == "near-copies")]
    assert row["reading"].item() == controls.UNCALIBRATED
    result = report.verdict(uncalibrated)
    assert result["passed"] and result["uncalibrated"] == ["near-copies / pixels"]
    assert result["negative_controls_failed"] == ["near-copies / random unseen real (control) / pixels",
                                                  "DCR share / selected unseen real (control) / pixels"]
    assert "uncalibrated" in report.verdict_text(result) and "UNCALIBRATED" in report.markdown(uncalibrated)
    # The generator's attack is uncalibrated when unseen images on both sides already tell apart.
    loose = report.verdict(controls.annotate(readings_table(negative_near_copies=False, generator_negative=False)))
    assert loose["uncalibrated"] == ["near-copies / pixels", "MIA generator: denoising loss, t=20 / model"]


def test_a_dcr_failure_counts_only_beyond_the_selection_of_unseen_images():
    from histodistill.privacy import controls, report

    explained = controls.annotate(readings_table(negative_near_copies=False, versus_dcr=True))
    result = report.verdict(explained)
    assert result["passed"] and result["within_selection_bias"] == ["DCR share / pixels"]
    beyond = report.verdict(controls.annotate(readings_table(negative_near_copies=False, versus_dcr=False)))
    assert not beyond["passed"] and beyond["failed_tests"] == ["DCR share / pixels"]
    assert "beyond the same selection of unseen real images" in beyond["details"][0]
    # With the privacy filter on, near-copies in pixels pass by construction and say so.
    filtered = controls.annotate(readings_table(), privacy_filter=True)
    result = report.verdict(filtered)
    assert result["passed"] and result["by_construction"] == ["near-copies / pixels"]
    # ... and the verdict names the tests its evidence comes from: those that do not share the filter's criterion.
    assert result["independent_of_filter"] == ["MIA generator: denoising loss, t=20 / model"]  # DCR: within selection
    passing = report.verdict(controls.annotate(readings_table(distilled_dcr=True), privacy_filter=True))
    assert passing["independent_of_filter"] == ["DCR share / pixels", "MIA generator: denoising loss, t=20 / model"]
    assert "Independent of the filter, and counted: DCR share / pixels" in report.verdict_text(passing)
    assert report.verdict(controls.annotate(readings_table()))["independent_of_filter"] == []  # no filter, no list


def test_unseen_controls_leave_a_val_image_per_class_and_follow_the_class_mix(monkeypatch):
    from types import SimpleNamespace

    from histodistill.privacy.config import PrivacyConfig
    from histodistill.select.config import SelectionConfig
    from histodistill.privacy import controls

    rng = np.random.default_rng(0)
    val_labels = np.repeat(np.arange(3), [12, 5, 30])
    val = SimpleNamespace(images=rng.integers(0, 255, (47, 8, 8, 3), dtype=np.uint8), labels=val_labels)
    bundle = SimpleNamespace(splits={"val": val}, n_classes=3, artifact=SimpleNamespace(key="data"))
    up = SimpleNamespace(bundle=bundle, selection_cfg=SelectionConfig(method="random", ipc=10, embedding="umap"),
                         classifier=SimpleNamespace(key="clf"))
    monkeypatch.setattr(controls.selection, "umap_embedding", lambda images, seed: memorisation.pixel_vectors(images))
    sets = controls.unseen_sets(up, np.array([10, 10, 10]), PrivacyConfig())
    random_set = sets[controls.RANDOM_UNSEEN]
    assert np.bincount(random_set.labels, minlength=3).tolist() == [10, 4, 10]  # one of 5 left for the holdout
    np.testing.assert_array_equal(random_set.images, val.images[random_set.unseen])
    selected = sets[controls.SELECTED_UNSEEN]
    assert np.bincount(selected.labels, minlength=3).tolist() == [4, 4, 4] and not selected.attacked
    assert random_set.role == selected.role == controls.NEGATIVE
    # A selection of 10 of 100 pool images per class is stronger than 4 of 5-30 val images.
    sets[controls.DISTILLED] = controls.AuditSet(val.images[:30], np.repeat(np.arange(3), 10), "d", controls.AUDITED)
    note = controls.selection_note(np.repeat(np.arange(3), 100), val_labels, sets)
    assert "keeps 10.0% of the pool" in note and "42.2% of val" in note and "weaker selection" in note


def test_the_control_denoiser_has_the_same_weights_in_a_worker_as_here(monkeypatch):
    """The audit trains its control denoiser in a model worker beside its other tests; on one
    thread wherever it trains, so the worker's weights are those of training it here (this
    process on two threads), and the audit's result does not depend on where it ran."""
    import torch

    from histodistill import machine, workers
    from histodistill.generate.config import DiffusionConfig

    monkeypatch.setenv(workers.VARIABLE, "2")
    latents = torch.randn(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cfg = DiffusionConfig(hidden_size=16, depth=1, patch_size=2, steps=12, batch_size=6, warmup_steps=2,
                          augment=False, checkpoint_every=12)
    args = (latents, np.arange(6) % 3, 3, cfg)
    with machine.threads(2):
        here = generator_attack.train_control(*args).state_dict()
    there = workers.submit(2, generator_attack.train_control, *args).result().state_dict()
    assert here.keys() == there.keys() and len(here) > 10
    assert all(torch.equal(here[k], there[k]) for k in here)
    assert not torch.equal(here["pos_embed"], torch.zeros_like(here["pos_embed"]))  # trained weights, not zeros
