"""Downstream training: the schedule, learning a separable set, determinism, and the
checks that keep train and test comparable."""

import dataclasses

import numpy as np
import pytest
import torch

from conftest import balanced_labels, make_images
from histodistill.classifiers import training
from histodistill.classifiers.config import DownstreamConfig as TrainRecipe


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead and noise
    yield
    torch.set_num_threads(threads)


def two_tone(n_per_class, seed, size=28):
    """Class 0: horizontal stripes, class 1: vertical ones, with noise; trivially separable.
    (Brightness alone would not do: instance norm removes each image's mean.)"""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1], n_per_class)
    stripes = (np.arange(size) // 2 % 2 * 120 + 60)[:, None] * np.ones((1, size))
    base = np.where(labels[:, None, None] == 0, stripes[None], stripes.T[None])[..., None]
    images = np.clip(base + rng.normal(0, 20, (len(labels), size, size, 3)), 0, 255).astype(np.uint8)
    return images, labels


def test_learning_rate_warms_up_then_decays_to_zero():
    lrs = [training.learning_rate(s, 100, 0.1, 0.3) for s in range(100)]
    assert lrs[29] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.1 / 30)
    assert all(a < b for a, b in zip(lrs[:29], lrs[1:30]))  # linear warm-up
    assert all(a >= b for a, b in zip(lrs[30:], lrs[31:]))  # cosine decay
    assert lrs[30] == pytest.approx(0.1) and lrs[-1] < 0.001


def test_without_warm_up_the_rate_decays_from_the_first_step():
    # The judge's schedule.
    lrs = [training.learning_rate(s, 100, 0.1, 0.0) for s in range(100)]
    assert lrs[0] == 0.1 and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 1e-4


@pytest.mark.parametrize("network", ["convnet", "resnet18"])
def test_a_separable_set_is_learnt_and_the_run_repeats(network):
    train_x, train_y = two_tone(6, seed=1)
    val_x, val_y = two_tone(10, seed=2)
    # dsa off: a 90-degree turn would swap the classes; a short run needs a fast EMA.
    recipe = TrainRecipe(network=network, steps=12, batch_size=12, lr=0.05, eval_every=4, seed=3,
                         dsa=False, ema_decay=0.5)
    model, history = training.train_on_set(train_x, train_y, val_x, val_y, 2, recipe, progress=False, device="cpu")
    assert history["step"].tolist() == [4, 8, 12]
    assert history["val_acc"].max() == 1.0
    # The kept evaluation is the first with the best val AUC (the selection metric).
    assert training.evaluate_on_test(model, *two_tone(10, seed=4))["auc"] == 1.0
    again, _ = training.train_on_set(train_x, train_y, val_x, val_y, 2, recipe, progress=False, device="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


@pytest.mark.parametrize("contrastive,dsa", [("supcon", True), ("supcon", False), ("supcon_1view", True),
                                             ("push_pull", False)])
def test_contrastive_terms_train(contrastive, dsa):
    train_x, train_y = two_tone(4, seed=1)
    recipe = TrainRecipe(steps=2, batch_size=8, contrastive=contrastive, eval_every=1, dsa=dsa)
    _, history = training.train_on_set(train_x, train_y, train_x, train_y, 2, recipe, progress=False, device="cpu")
    assert len(history) == 2 and np.isfinite(history["loss"]).all()


def test_the_budget_is_steps_whatever_the_set_size():
    # 18 images in batches of 8: three steps per pass (8, 8, 2); a budget of 5 steps ends
    # in the second pass, and the last step is always evaluated.
    x, y = make_images(18, seed=1), balanced_labels(18, 3)
    recipe = TrainRecipe(width_scale=0.125, steps=5, batch_size=8, eval_every=2, dsa=False)
    _, history = training.train_on_set(x, y, x, y, 3, recipe, progress=False)
    assert history["step"].tolist() == [2, 4, 5]
    assert history["epoch"].tolist() == [1, 2, 2]
    assert history["lr"].iloc[-1] == pytest.approx(recipe.lr * 0.25)  # cosine over steps 2..4 of 5
    one_batch = make_images(6, seed=2), balanced_labels(6, 3)  # a set in one batch: a step per pass
    _, history = training.train_on_set(*one_batch, x, y, 3, dataclasses.replace(recipe, steps=4), progress=False)
    assert history["step"].tolist() == history["epoch"].tolist() == [2, 4]


def test_train_and_val_must_share_a_resolution():
    small, labels = two_tone(2, seed=0, size=28)
    large, _ = two_tone(2, seed=0, size=32)
    with pytest.raises(ValueError, match="one resolution"):
        training.train_on_set(small, labels, large, labels, 2, TrainRecipe(steps=1), progress=False)
    with pytest.raises(ValueError, match="uint8"):
        training.train_on_set(small.astype(np.float32), labels, small, labels, 2, TrainRecipe(steps=1))


def test_reference_supcon_starts_from_the_cross_entropy_runs_network():
    # The projection head is drawn after the network, so run i of the contrastive row starts
    # from the same network weights as run i of the cross-entropy row (paired comparisons).
    x, y = two_tone(4, seed=1)
    ce, supcon = (training.train_on_set(x, y, x, y, 2, TrainRecipe(steps=1, contrastive=kind, dsa=False,
                                                                     lr=0.0, ema_decay=0.0), progress=False)[0]
                  for kind in ("none", "supcon"))
    for key, value in ce.state_dict().items():
        torch.testing.assert_close(supcon.state_dict()[key], value, rtol=0, atol=0, msg=key)
