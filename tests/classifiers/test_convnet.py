"""The ConvNet and the judge: shapes and automatic depth, the judge's training (by the one
loop, `training.train_judge`) on trivially separable images, its initialisation, determinism,
best-val model selection, normalisation, and the safetensors round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from histodistill.classifiers import convnet, training
from histodistill.classifiers.config import ClassifierConfig

COLOURS = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200]], dtype=np.uint8)


def colour_images(n: int, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` noisy solid-colour images of 3 classes (red, green, blue): trivially separable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % 3
    noise = rng.integers(-30, 31, (n, size, size, 3))
    images = np.clip(COLOURS[labels][:, None, None, :].astype(int) + noise, 0, 255).astype(np.uint8)
    return images, labels


@pytest.fixture(scope="module")
def trained():
    """One small trained model, shared by the tests that only read it."""
    xtr, ytr = colour_images(60, seed=1)
    xval, yval = colour_images(30, seed=2)
    cfg = ClassifierConfig(width=8, epochs=3, batch_size=16, lr=0.05)
    model, history = training.train_judge(xtr, ytr, xval, yval, 3, cfg, progress=False)
    return model, history, (xtr, ytr, xval, yval), cfg


# --- architecture ---------------------------------------------------------------------------


@pytest.mark.parametrize("size, depth", [(28, 3), (32, 3), (64, 4), (128, 5), (224, 5), (8, 1)])
def test_depth_for(size, depth):
    assert convnet.depth_for(size) == depth


@pytest.mark.parametrize("size, depth, side", [(28, 3, 3), (64, 4, 4)])
def test_feature_and_logit_shapes(size, depth, side):
    model = convnet.ConvNet(n_classes=5, image_size=size, width=8)
    assert model.depth == depth
    x = torch.randn(2, 3, size, size)
    assert model.features(x).shape == (2, 8 * side * side)
    assert model(x).shape == (2, 5)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == depth and all(m.num_groups == m.num_channels == 8 for m in norms)


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="too small"):
        convnet.ConvNet(3, image_size=16, width=8, depth=5)
    with pytest.raises(ValueError, match="too small"):
        convnet.depth_for(4)


# --- training -------------------------------------------------------------------------------


def test_training_separates_trivial_classes(trained):
    model, history, (_, _, xval, yval), cfg = trained
    assert list(history.columns) == ["epoch", "train_loss", "train_acc", "val_acc", "lr"]
    assert history.epoch.tolist() == list(range(1, cfg.epochs + 1))
    assert history.val_acc.max() >= 0.9
    assert not model.training
    assert (history.lr.diff().dropna() < 0).all()  # cosine decay
    probs = convnet.predict(model, xval)
    assert probs.shape == (len(xval), 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_returned_model_is_the_best_val_epoch(trained):
    model, history, (_, _, xval, yval), _ = trained
    assert convnet.accuracy(model, xval, yval) == history.val_acc.max()


def test_selection_keeps_best_val_weights_not_last(monkeypatch):
    """Script the val accuracies (0.2, 0.9, 0.5): the epoch-2 weights must come back."""
    scripted, snapshots = iter([0.2, 0.9, 0.5]), []

    def fake_scores(model, images, labels):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"acc": next(scripted), "auc": float("nan"), "macro_f1": 0.0}

    monkeypatch.setattr(training, "val_scores", fake_scores)
    xtr, ytr = colour_images(24, seed=3)
    cfg = ClassifierConfig(width=8, epochs=3, batch_size=8, lr=0.05)
    model, history = training.train_judge(xtr, ytr, xtr, ytr, 3, cfg, progress=False)
    assert history.val_acc.tolist() == [0.2, 0.9, 0.5]
    state = model.state_dict()
    assert all(torch.equal(state[k], snapshots[1][k]) for k in state)
    assert not all(torch.equal(state[k], snapshots[2][k]) for k in state)


def test_judge_loop_is_the_judges_recipe():
    cfg = ClassifierConfig(width=8, epochs=3, batch_size=16, lr=0.05, augment=False)
    loop = training.judge_loop(cfg, 60)  # 60 images in batches of 16: 4 steps per epoch
    assert (loop.steps, loop.eval_every, loop.batch_size, loop.lr) == (12, 4, 16, 0.05)
    assert (loop.warmup_fraction, loop.ema_decay, loop.augment, loop.select_by) == (0.0, None, None, "acc")
    assert training.judge_loop(ClassifierConfig(), 60).augment == "dihedral"
    assert [column for column, _ in loop.history] == ["epoch", "train_loss", "train_acc", "val_acc", "lr"]


def test_judge_starts_from_the_seeded_convnet():
    """At lr 0 SGD leaves the weights where they started: the ConvNet built right after
    seeding torch with the config's seed, carrying the train split's statistics."""
    xtr, ytr = colour_images(12, seed=6)
    cfg = ClassifierConfig(width=4, epochs=2, batch_size=8, lr=0.0, seed=5)
    model, history = training.train_judge(xtr, ytr, xtr, ytr, 3, cfg, progress=False)
    torch.manual_seed(cfg.seed)
    fresh = convnet.ConvNet(3, 28, cfg.width, cfg.depth, 3)
    mean, std = convnet.channel_stats(xtr)
    fresh.mean.copy_(torch.from_numpy(mean))
    fresh.std.copy_(torch.from_numpy(std))
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in fresh.state_dict().items()) and state.keys() == fresh.state_dict().keys()
    assert history.lr.tolist() == [0.0, 0.0]


def test_same_config_gives_identical_weights():
    xtr, ytr = colour_images(24, seed=4)
    xval, yval = colour_images(12, seed=5)
    cfg = ClassifierConfig(width=8, epochs=2, batch_size=8, seed=7)
    a, ha = training.train_judge(xtr, ytr, xval, yval, 3, cfg, progress=False)
    b, hb = training.train_judge(xtr, ytr, xval, yval, 3, cfg, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ha.equals(hb)
    other = ClassifierConfig(width=8, epochs=2, batch_size=8, seed=8)
    c, _ = training.train_judge(xtr, ytr, xval, yval, 3, other, progress=False)
    assert not torch.equal(c.classifier.weight, a.classifier.weight)


def test_training_leaves_global_rng_and_threads_alone():
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    xtr, ytr = colour_images(12, seed=6)
    training.train_judge(xtr, ytr, xtr, ytr, 3, ClassifierConfig(width=4, epochs=1), progress=False)
    assert torch.equal(torch.rand(3), expected)
    assert torch.get_num_threads() == threads


def test_bad_inputs_are_refused():
    xtr, ytr = colour_images(6)
    cfg = ClassifierConfig(width=4, epochs=1)
    with pytest.raises(ValueError, match="uint8"):
        training.train_judge(xtr.astype(np.float32), ytr, xtr, ytr, 3, cfg, progress=False)
    with pytest.raises(ValueError, match="labels must lie"):
        training.train_judge(xtr, ytr + 1, xtr, ytr, 3, cfg, progress=False)


# --- normalisation --------------------------------------------------------------------------


def test_channel_stats_and_to_tensor():
    images = np.random.default_rng(0).integers(0, 256, (10, 6, 6, 3), dtype=np.uint8)
    mean, std = convnet.channel_stats(images, chunk=3)  # chunking must not change the result
    as_float = images.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, as_float.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, as_float.std(0), rtol=1e-5)
    x = convnet.to_tensor(images, mean, std)
    assert x.shape == (10, 3, 6, 6) and x.dtype == torch.float32
    np.testing.assert_allclose(x.mean((0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x.std((0, 2, 3), unbiased=False).numpy(), 1, atol=1e-4)
    # Laid out channels first (a channels-last view sends group norm to its slow kernel),
    # with the values of the plain permuted view.
    assert x.is_contiguous()
    view = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    expected = (view - torch.from_numpy(mean).view(1, 3, 1, 1)) / torch.from_numpy(std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-6)


# --- pooling --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (4, 3, 7, 7), (2, 5, 6, 9), (1, 2, 3, 2)])
def test_halving_pool_equals_avg_pool2d(shape):
    """The ConvNet's pooling is `avg_pool2d(2, 2)` (floor mode) in values and gradients, and
    its gradient passes torch's numerical check (odd sides: the dropped row/column gets 0)."""
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    pooled = convnet.HalvingPool()(x)
    expected = torch.nn.functional.avg_pool2d(x, 2, 2)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=1e-12)
    upstream = torch.randn_like(expected)
    (grad,) = torch.autograd.grad(pooled, x, upstream)
    (expected_grad,) = torch.autograd.grad(expected, x, upstream)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(convnet.HalvingPool(), (x,))


def test_model_carries_train_statistics(trained):
    model, _, (xtr, _, xval, _), _ = trained
    mean, std = convnet.channel_stats(xtr)
    assert torch.equal(model.mean, torch.from_numpy(mean))
    assert torch.equal(model.std, torch.from_numpy(std))
    # predict/embed normalise with the stored (train) statistics, not the input's own
    with torch.no_grad():
        by_hand = model.features(convnet.to_tensor(xval, mean, std)).numpy()
        own_stats = model.features(convnet.to_tensor(xval, *convnet.channel_stats(xval))).numpy()
    feats = convnet.embed(model, xval, batch_size=7)
    assert feats.dtype == np.float32 and feats.shape == (len(xval), model.feature_dim)
    np.testing.assert_allclose(feats, by_hand, rtol=1e-5, atol=1e-6)
    assert not np.allclose(feats, own_stats, atol=1e-3)


# --- saving ---------------------------------------------------------------------------------


def test_save_load_round_trip(trained, tmp_path):
    model, _, (_, _, xval, _), _ = trained
    convnet.save_classifier(model, tmp_path / "clf")
    args = json.loads((tmp_path / "clf" / convnet.ARGS_FILE).read_text())
    assert args == {"n_classes": 3, "image_size": 28, "width": 8, "depth": 3, "in_channels": 3}
    loaded = convnet.load_classifier(tmp_path / "clf")
    assert not loaded.training
    assert torch.equal(loaded.mean, model.mean) and torch.equal(loaded.std, model.std)
    np.testing.assert_array_equal(convnet.predict(loaded, xval), convnet.predict(model, xval))
    np.testing.assert_array_equal(convnet.embed(loaded, xval), convnet.embed(model, xval))


def test_no_torchvision_import():
    """In a fresh interpreter: other tests' imports (medmnist) may load it in this one."""
    code = "import sys, histodistill.classifiers.convnet; assert 'torchvision' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def reference_judge(train_images, train_labels, val_images, val_labels, n_classes, cfg):
    """The judge's own training loop as it was before the one loop replaced it (plain SGD on
    one ConvNet, cosine decay from step 0, a flip or turn per image, val accuracy after each
    epoch, the best epoch kept): the reference `training.train_judge` must equal bit for bit,
    since judges trained by it are cached."""
    import math

    import torch.nn.functional as F

    from histodistill.classifiers.augmentation import random_dihedral

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = convnet.ConvNet(n_classes, train_images.shape[1], cfg.width, cfg.depth, train_images.shape[3])
    mean, std = convnet.channel_stats(train_images)
    model.mean.copy_(torch.from_numpy(mean))
    model.std.copy_(torch.from_numpy(std))
    generator = torch.Generator().manual_seed(cfg.seed)
    optimiser = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    images, labels = torch.from_numpy(train_images), torch.from_numpy(train_labels.astype(np.int64))
    total, step = cfg.epochs * math.ceil(len(labels) / cfg.batch_size), 0
    best, best_state, rows = -1.0, None, []
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        loss_sum, correct = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            x, y = convnet.to_tensor(images[idx], model.mean, model.std), labels[idx]
            if cfg.augment:
                x = random_dihedral(x, generator)
            lr = 0.5 * cfg.lr * (1 + math.cos(math.pi * (step / total)))
            for group in optimiser.param_groups:
                group["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            step += 1
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
        val_acc = convnet.accuracy(model, val_images, val_labels)
        rows.append(dict(epoch=epoch, train_loss=loss_sum / len(labels), train_acc=correct / len(labels),
                         val_acc=val_acc, lr=lr))
        if val_acc > best:
            best, best_state = val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return model.eval(), rows


@pytest.mark.parametrize("changes", [{"batch_size": 8}, {"augment": False, "batch_size": 16, "seed": 3}])
def test_the_one_loop_trains_the_judge_exactly_as_its_own_loop_did(changes):
    xtr, ytr = colour_images(60, size=16, seed=1)
    xval, yval = colour_images(30, size=16, seed=2)
    cfg = ClassifierConfig(width=8, epochs=3, lr=0.05, **changes)
    model, history = training.train_judge(xtr, ytr, xval, yval, 3, cfg, progress=False)
    reference, rows = reference_judge(xtr, ytr, xval, yval, 3, cfg)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert history.to_dict("records") == rows
