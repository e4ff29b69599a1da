"""Evaluation metrics (equal to medmnist's ACC/AUC, hand-made cases, mean ± std over runs)
and Distribution Matching (shapes, determinism, Siamese augmentation, a falling loss)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import make_images

from histodistill.classifiers import convnet, metrics
from histodistill.classifiers.augmentation import DSA
from histodistill.evaluate import dm

medmnist = pytest.importorskip("medmnist")
from medmnist.evaluator import getACC, getAUC  # noqa: E402


def random_scores(n: int, n_classes: int = 9, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """medmnist-layout labels (N, 1) covering every class, and softmax scores (N, C)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % n_classes)[:, None].astype(np.uint8)
    logits = rng.normal(size=(n, n_classes)) + 1.5 * np.eye(n_classes)[labels[:, 0]] * rng.random((n, 1))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return labels, probs


# --- metrics --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_acc_and_auc_equal_medmnist(seed):
    labels, probs = random_scores(300, seed=seed)
    ours = metrics.evaluate(labels, probs)
    assert ours["acc"] == pytest.approx(getACC(labels, probs, "multi-class"), abs=1e-12)
    assert ours["auc"] == pytest.approx(getAUC(labels, probs, "multi-class"), abs=1e-12)
    flat = metrics.evaluate(labels[:, 0].astype(np.int64), probs)  # (N,) labels: same numbers
    assert flat["acc"] == ours["acc"] and flat["auc"] == ours["auc"]
    assert 0.0 < ours["macro_f1"] < 1.0 and len(ours["per_class_acc"]) == 9


def test_equal_to_medmnist_evaluator_on_a_local_npz(tmp_path):
    """Through medmnist.Evaluator itself, reading test labels from a local pathmnist.npz."""
    labels, probs = random_scores(180, seed=7)
    np.savez_compressed(tmp_path / "pathmnist.npz", test_labels=labels)
    official = medmnist.Evaluator("pathmnist", "test", root=str(tmp_path)).evaluate(probs)
    ours = metrics.evaluate(labels, probs)
    assert ours["acc"] == pytest.approx(official.ACC, abs=1e-12)
    assert ours["auc"] == pytest.approx(official.AUC, abs=1e-12)


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 2, 1, 0, 2])
    probs = np.eye(3)[labels] * 0.8 + 0.1
    m = metrics.evaluate(labels, probs)
    assert m["acc"] == m["auc"] == m["macro_f1"] == 1.0
    assert m["per_class_acc"] == [1.0, 1.0, 1.0] and m["n"] == 7


@pytest.mark.parametrize("seed", range(5))
def test_rank_auc_equals_scikit_learns_with_and_without_ties(seed):
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 200)
    probs = rng.random((200, 4))
    if seed % 2:  # coarse scores: many ties
        probs = np.round(probs, 1)
    m = metrics.evaluate(labels, probs)
    expected = [roc_auc_score(labels == c, probs[:, c]) for c in range(4)]
    np.testing.assert_allclose(m["per_class_auc"], expected, rtol=0, atol=1e-12)


def test_hand_made_per_class_accuracy_and_f1():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])  # predicts 0, 1, 1, 1
    m = metrics.evaluate(labels, probs)
    assert m["acc"] == 0.75 and m["per_class_acc"] == [0.5, 1.0]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)  # F1 of class 0: 2/3, class 1: 0.8


def test_absent_class_gives_nan_auc_with_a_warning():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.8, 0.1]])
    with pytest.warns(UserWarning, match=r"classes \[2\] are absent"):
        m = metrics.evaluate(labels, probs)
    assert math.isnan(m["auc"]) and math.isnan(m["per_class_auc"][2])
    assert m["per_class_auc"][:2] == [1.0, 1.0] and math.isnan(m["per_class_acc"][2])
    assert m["acc"] == 1.0
    with warnings.catch_warnings():  # medmnist (recent scikit-learn) also gives NaN
        warnings.simplefilter("ignore")
        try:
            assert math.isnan(getAUC(labels, probs, "multi-class"))
        except ValueError:  # older scikit-learn raises instead
            pass


def test_an_absent_class_is_reported_once_per_evaluation_set():
    """A table of many models evaluates the same split again and again: one warning, even
    when something touches the warning filters in between (as libraries do)."""
    labels = np.array([0, 1, 0, 1, 1])
    probs = np.tile([0.5, 0.3, 0.1, 0.1], (5, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(3):
            metrics.evaluate(labels, probs)
            with warnings.catch_warnings():  # resets Python's once-per-place registry
                warnings.simplefilter("ignore")
        metrics.evaluate(labels[:4], probs[:4])  # another set: said again
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and all("classes [2, 3] are absent" in m for m in messages)
    assert "these 5 labels" in messages[0] and "these 4 labels" in messages[1]


@pytest.mark.parametrize("labels, probs, message", [
    (np.array([0, 1]), np.array([0.2, 0.8]), "probabilities must be"),
    (np.array([0, 1, 1]), np.ones((2, 2)), "one label per row"),
    (np.array([0, 3]), np.ones((2, 2)), "must lie in 0..1"),
    (np.array([[0, 1]]), np.ones((1, 2)), r"labels must be \(N,\)"),
    (np.array([0, 1]), np.array([[np.nan, 1.0], [0.0, 1.0]]), "NaN"),
])
def test_bad_inputs_are_refused(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        metrics.evaluate(labels, probs)


def test_summarise_mean_and_sample_std():
    runs = [dict(acc=a, auc=a + 0.1, macro_f1=a - 0.1) for a in (0.7, 0.8, 0.9)]
    s = metrics.summarise(runs)
    assert s["n_runs"] == 3
    assert s["acc_mean"] == pytest.approx(0.8) and s["acc_std"] == pytest.approx(0.1)  # ddof=1
    assert s["auc_mean"] == pytest.approx(0.9) and s["macro_f1_std"] == pytest.approx(0.1)
    one = metrics.summarise(runs[:1])
    assert one["acc_mean"] == 0.7 and one["acc_std"] == 0.0
    with pytest.raises(ValueError, match="at least one run"):
        metrics.summarise([])
    with pytest.raises(ValueError, match="'auc'"):
        metrics.summarise([dict(acc=0.5, macro_f1=0.5)])


def test_format_mean_std():
    assert metrics.format_mean_std(0.81234, 0.0126) == "0.812 ± 0.013"
    assert metrics.format_mean_std(0.5, 0.25, digits=1) == "0.5 ± 0.2"  # round half to even


# --- distribution matching ------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions gain nothing from threads, and two threads on two busy cores
    slow them down many times over; restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_real(per_class: int = 20, n_classes: int = 3):
    """Random 28 px images of 3 classes, each class brighter in its own colour channel."""
    images = make_images(per_class * n_classes, seed=3)
    labels = np.arange(len(images)) % n_classes
    for c in range(n_classes):
        images[labels == c, :, :, c] = np.maximum(images[labels == c, :, :, c], 180)
    return images, labels


TINY = dict(n_classes=3, ipc=2, iterations=3, batch_real=8, embed_width=16, device="cpu")


def test_dm_shapes_dtype_and_labels():
    images, labels = tiny_real()
    syn, syn_labels = dm.distribution_matching(images, labels, **TINY)
    assert syn.shape == (6, 3, 28, 28) and syn.dtype == torch.float32 and not syn.requires_grad
    assert syn_labels.tolist() == [0, 0, 1, 1, 2, 2] and syn_labels.dtype == torch.int64
    assert torch.isfinite(syn).all()
    out = dm.to_uint8(syn, *convnet.channel_stats(images))
    assert out.shape == (6, 28, 28, 3) and out.dtype == np.uint8


def test_dm_is_deterministic_and_seeded():
    images, labels = tiny_real()
    before = torch.random.get_rng_state()
    a, _ = dm.distribution_matching(images, labels, seed=1, **TINY)
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG left alone
    b, _ = dm.distribution_matching(images, labels, seed=1, **TINY)
    c, _ = dm.distribution_matching(images, labels, seed=2, **TINY)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_dm_real_init_starts_from_real_images_of_each_class():
    images, labels = tiny_real()
    mean, std = convnet.channel_stats(images)
    syn, syn_labels = dm.distribution_matching(images, labels, **{**TINY, "iterations": 0})
    back = dm.to_uint8(syn, mean, std)
    keys = {img.tobytes(): lab for img, lab in zip(images, labels)}
    assert [keys[img.tobytes()] for img in back] == syn_labels.tolist()  # exact round trip
    assert len({img.tobytes() for img in back}) == 6  # distinct picks


def test_dm_accepts_normalised_float_images():
    images, labels = tiny_real()
    mean, std = convnet.channel_stats(images)
    a, _ = dm.distribution_matching(images, labels, **TINY)
    b, _ = dm.distribution_matching(convnet.to_tensor(images, mean, std), labels, mean=mean, std=std, **TINY)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="need the mean and std"):
        dm.distribution_matching(convnet.to_tensor(images, mean, std), labels, **TINY)


def test_dm_dsa_gets_the_same_params_for_real_and_synthetic():
    images, labels = tiny_real()
    calls = []

    def flip_dsa(x, generator, params=None):
        if params is None:
            params = bool(torch.randint(0, 2, (1,), generator=generator))
        calls.append((len(x), params))
        return (x.flip(3) if params else x), params

    dm.distribution_matching(images, labels, dsa=flip_dsa, **TINY)
    assert len(calls) == 2 * 3 * TINY["iterations"]  # real then synthetic, per class, per iteration
    reals, syns = calls[0::2], calls[1::2]
    assert all(r[0] == 8 and s[0] == 2 for r, s in zip(reals, syns))
    assert [r[1] for r in reals] == [s[1] for s in syns]


def test_a_killed_dm_run_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    images, labels = tiny_real()
    run = {**TINY, "iterations": 7, "seed": 4, "dsa": DSA(shared=True).augment, "return_losses": True}
    straight, _, straight_losses = dm.distribution_matching(images, labels, **run)
    calls = 0

    def dies_in_iteration_6(x, generator, params=None):
        nonlocal calls
        calls += 1
        if calls > 2 * 3 * 5:  # real and synthetic batch of 3 classes, 5 iterations done
            raise KeyboardInterrupt
        return DSA(shared=True).augment(x, generator, params=params)

    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        dm.distribution_matching(images, labels, **{**run, "dsa": dies_in_iteration_6}, work_dir=work,
                                 checkpoint_every=2, config_hash="h")
    assert (work / "LATEST").read_text() == "step-0000004"  # the last checkpoint before the kill
    resumed, _, losses = dm.distribution_matching(images, labels, **run, work_dir=work, checkpoint_every=2,
                                                  config_hash="h")
    assert "[dm] resumed from step-0000004 (iteration 4)" in capsys.readouterr().out
    assert torch.equal(resumed, straight) and losses == straight_losses


def test_match_loss_falls_on_a_fixed_embedder():
    images, labels = tiny_real()
    mean, std = convnet.channel_stats(images)
    x = convnet.to_tensor(images, mean, std)
    torch.manual_seed(0)
    net = convnet.ConvNet(3, 28, width=16).requires_grad_(False)
    real_batches = [x[torch.from_numpy(labels == c)] for c in range(3)]
    syn = torch.randn(6, 3, 28, 28, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=1.0, momentum=dm.MOMENTUM)
    losses = [dm.match_step(net.features, real_batches, syn, optimizer) for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


def test_dm_loss_history_with_fresh_embedders():
    images, labels = tiny_real()
    _, _, losses = dm.distribution_matching(images, labels, init="noise", return_losses=True,
                                            **{**TINY, "iterations": 40, "lr_img": 10.0})
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]), losses


def test_dm_refuses_bad_inputs():
    images, labels = tiny_real(per_class=1)
    with pytest.raises(ValueError, match="init='real' needs >= 2"):
        dm.distribution_matching(images, labels, **TINY)
    with pytest.raises(ValueError, match=r"classes \[3\] have no real images"):
        dm.distribution_matching(images, labels, **{**TINY, "n_classes": 4, "init": "noise"})
    with pytest.raises(ValueError, match="init must be"):
        dm.distribution_matching(images, labels, **{**TINY, "init": "zeros"})
    with pytest.raises(ValueError, match="one label per real image"):
        dm.distribution_matching(images, labels[:2], **TINY)


# --- weighted scores and the paired bootstrap ------------------------------------------------


def test_weighted_scores_with_unit_weights_equal_evaluate_and_counts_equal_repeats():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 60)
    probs = rng.random((60, 4))
    probs[:5, 0] = probs[5:10, 0] = 0.5  # ties inside a column
    ones = metrics.weighted_scores(labels, probs, np.ones((1, 60)))
    ref = metrics.evaluate(labels, probs)
    for key in ("acc", "auc", "macro_f1"):
        assert ones[key][0] == pytest.approx(ref[key], abs=1e-12)
    counts = rng.integers(0, 3, 60)  # a bootstrap resample is a weighting by counts
    repeated = metrics.evaluate(np.repeat(labels, counts), np.repeat(probs, counts, axis=0))
    weighted = metrics.weighted_scores(labels, probs, counts[None].astype(float))
    for key in ("acc", "auc", "macro_f1"):
        assert weighted[key][0] == pytest.approx(repeated[key], abs=1e-12)


def test_paired_bootstrap_finds_a_known_difference_and_none_between_equal_rows():
    rng = np.random.default_rng(1)
    n, runs = 400, 5
    labels = rng.integers(0, 2, n)
    def row(accuracy):
        # Runs whose argmax is right on a share `accuracy` of the images.
        right = rng.random((runs, n)) < accuracy
        predicted = np.where(right, labels, 1 - labels)
        probs = np.zeros((runs, n, 2))
        probs[np.arange(runs)[:, None], np.arange(n), predicted] = 1.0
        return probs
    better, worse = row(0.85), row(0.65)
    result = metrics.paired_bootstrap(better, worse, labels, n_boot=500)
    acc = result["acc"]
    assert acc["diff"] == pytest.approx(0.20, abs=0.03) and acc["low"] > 0.1 and acc["low"] < acc["diff"] < acc["high"]
    assert acc["n_runs"] == runs and acc["n_test"] == n
    same = metrics.paired_bootstrap(better, better, labels, n_boot=200)
    assert all(same[k]["diff"] == same[k]["low"] == same[k]["high"] == 0.0 for k in ("acc", "auc", "macro_f1"))
    with pytest.raises(ValueError, match="one shape"):
        metrics.paired_bootstrap(better, worse[:3], labels)


def test_bootstrap_mean_brackets_a_known_accuracy_and_narrows_with_more_runs():
    rng = np.random.default_rng(2)
    n = 400
    labels = rng.integers(0, 2, n)

    def row(runs, accuracy=0.75):
        right = rng.random((runs, n)) < accuracy
        probs = np.zeros((runs, n, 2))
        probs[np.arange(runs)[:, None], np.arange(n), np.where(right, labels, 1 - labels)] = 1.0
        return probs

    five = row(5)
    result = metrics.bootstrap_mean(five, labels, n_boot=500)
    acc = result["acc"]
    per_run = [metrics.evaluate(labels, p)["acc"] for p in five]
    assert acc["mean"] == pytest.approx(np.mean(per_run), abs=1e-12)  # the mean over runs on the whole test set
    assert acc["low"] < 0.75 < acc["high"] and acc["high"] - acc["low"] < 0.1
    assert acc["n_runs"] == 5 and acc["n_test"] == n
    wide = metrics.bootstrap_mean(row(1), labels, n_boot=500)["acc"]  # test noise only, of one run's images
    many = metrics.bootstrap_mean(row(20), labels, n_boot=500)["acc"]
    assert many["high"] - many["low"] < wide["high"] - wide["low"]
    perfect = np.eye(2)[np.tile(labels, (3, 1))]  # every run right on every image: no spread at all
    assert all(v["mean"] == v["low"] == v["high"] == 1.0 for v in metrics.bootstrap_mean(perfect, labels, n_boot=50).values())
    with pytest.raises(ValueError, match="runs, images, classes"):
        metrics.bootstrap_mean(five[0], labels)
