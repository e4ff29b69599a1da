"""Downstream parts: the networks (shapes, gradients, a few SGD steps), the augmentations
(differentiable Siamese augmentation: each family, determinism, re-applied parameters; the
random dihedral symmetry of the judge) and the losses (SupCon, the semi-push-pull term with
one softmax, the combined loss)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from histodistill.classifiers import convnet
from histodistill.classifiers.augmentation import DSA, FAMILIES, DSAParams, random_dihedral
from histodistill.classifiers.losses import combined_loss, semi_push_pull_loss, supcon_loss
from histodistill.classifiers.networks import ResNet18, build_network

# --- networks -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["convnet", "resnet18"])
@pytest.mark.parametrize("size", [28, 64])
def test_forward_backward_shapes(name, size):
    torch.manual_seed(0)
    model = build_network(name, n_classes=9, image_size=size)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    feats, logits = model.features(x), model(x)
    assert logits.shape == (2, 9)
    assert feats.shape == (2, model.feature_dim)
    if name == "resnet18":
        assert model.feature_dim == 512
    (logits.square().sum() + feats.sum()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


def test_resnet18_structure_and_norms():
    model = ResNet18(9)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    # stem + 8 blocks x 2 + 3 downsampling shortcuts
    assert len(norms) == 20 and all(m.affine for m in norms)
    assert model.stem[0].stride == (1, 1) and model.stem[0].kernel_size == (3, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_builder_refuses_bad_names_and_sizes():
    with pytest.raises(ValueError, match="unknown network"):
        build_network("vgg11", 9, 28)
    with pytest.raises(ValueError, match="too small"):
        build_network("resnet18", 9, 8)
    assert isinstance(build_network("ConvNet", 9, 28), convnet.ConvNet)


@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_few_sgd_steps_lower_the_loss(name):
    torch.manual_seed(0)
    model = build_network(name, n_classes=3, image_size=28)
    x, y = torch.randn(4, 3, 28, 28), torch.arange(4) % 3  # small: ResNet18 is slow on a CPU
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(3):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(F.cross_entropy(model(x), y).item())
    assert losses[-1] < losses[0]


def test_resnet_works_with_convnet_predict_and_embed():
    """The shared buffers/attributes let the ConvNet helpers drive a ResNet18 too."""
    model = ResNet18(4)
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 3), dtype=np.uint8)
    probs, feats = convnet.predict(model, images), convnet.embed(model, images)
    assert probs.shape == (3, 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert feats.shape == (3, 512)


# --- differentiable Siamese augmentation ----------------------------------------------------


def images(n: int = 6, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_changes_images_and_is_differentiable(family):
    dsa = DSA()
    x = images().requires_grad_(True)
    out, params = dsa.augment(x, torch.Generator().manual_seed(1), family=family)
    assert params.family == family and params.batch_size == len(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_family_is_deterministic_and_siamese(family):
    dsa, x = DSA(), images()
    a, pa = dsa.augment(x, torch.Generator().manual_seed(3), family=family)
    b, _ = dsa.augment(x, torch.Generator().manual_seed(3), family=family)
    assert torch.equal(a, b)
    again, _ = dsa.augment(x, params=pa)  # the Siamese property: same params, same output
    assert torch.equal(a, again)


def test_one_family_per_batch_drawn_from_the_generator():
    dsa, x = DSA(), images(n=2, size=8)
    drawn = [dsa.augment(x, torch.Generator().manual_seed(s))[1].family for s in range(60)]
    assert set(drawn) == set(FAMILIES)
    again = [dsa.augment(x, torch.Generator().manual_seed(s))[1].family for s in range(60)]
    assert drawn == again
    only = DSA("flip_rotate")
    assert {only.augment(x, torch.Generator().manual_seed(s))[1].family for s in range(20)} == {"flip", "rotate"}


def test_parameters_are_per_image_unless_shared():
    x = images(n=8)
    _, per_image = DSA().augment(x, torch.Generator().manual_seed(0), family="rotate")
    assert len(per_image.values["angle"].unique()) == 8
    # shared parameters re-apply to a batch of another size, image by image the same
    shared_dsa = DSA(shared=True)
    small, shared = shared_dsa.augment(x[:3], torch.Generator().manual_seed(0), family="scale")
    big, _ = shared_dsa.augment(x, params=shared)
    assert shared.batch_size == 1 and torch.allclose(big[:3], small)
    with pytest.raises(ValueError, match="drawn for 8 images"):
        DSA().augment(x[:3], params=per_image)


def test_crop_shifts_by_whole_pixels_and_flip_mirrors():
    x = images(n=1, size=8)
    params = DSAParams("crop", dict(shift_y=torch.tensor([1]), shift_x=torch.tensor([-2])))
    out, _ = DSA().augment(x, params=params)
    assert torch.allclose(out[0, :, 1:, :-2], x[0, :, :-1, 2:], atol=1e-5)
    assert torch.all(out[0, :, 0] == 0) and torch.all(out[0, :, :, -2:] == 0)
    flipped, _ = DSA().augment(x, params=DSAParams("flip", dict(flip=torch.tensor([True]))))
    assert torch.equal(flipped, x.flip(3))


def test_dsa_refuses_bad_input():
    with pytest.raises(ValueError, match="unknown DSA families"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="Generator"):
        DSA().augment(images())
    with pytest.raises(ValueError, match="float"):
        DSA().augment(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.Generator())
    _, params = DSA().augment(images(), torch.Generator(), family="flip")
    with pytest.raises(ValueError, match="contradicts"):
        DSA().augment(images(), family="rotate", params=params)


# --- the dihedral symmetries ---------------------------------------------------------------


def test_random_dihedral_gives_the_eight_symmetries():
    x = torch.arange(2 * 16, dtype=torch.float32).view(1, 2, 4, 4).repeat(64, 1, 1, 1)
    out = random_dihedral(x, torch.Generator().manual_seed(0))
    base = x[0]
    symmetries = [torch.rot90(v, k, dims=(1, 2)) for v in (base, base.flip(2)) for k in range(4)]
    seen = {next(i for i, s in enumerate(symmetries) if torch.equal(img, s)) for img in out}
    assert seen == set(range(8))  # every image is a symmetry of the original; all 8 occur


# --- losses ---------------------------------------------------------------------------------


def test_supcon_prefers_true_grouping():
    e1, e2 = torch.eye(4)[0], torch.eye(4)[1]
    feats = torch.stack([e1, e1, e2, e2]) * 3.0  # the scale must not matter: normalised
    right = supcon_loss(feats, torch.tensor([0, 0, 1, 1]))
    swapped = supcon_loss(feats, torch.tensor([0, 1, 0, 1]))
    assert right < swapped
    # by hand (T = 1): each anchor sees one positive at cosine 1, two negatives at cosine 0
    by_hand = -math.log(math.e / (math.e + 2))
    assert supcon_loss(feats, torch.tensor([0, 0, 1, 1]), 1.0).item() == pytest.approx(by_hand, rel=1e-5)


def test_supcon_over_two_views_rewards_views_that_agree_within_their_class():
    # Two views of four images, embedded by a head: when each image's two views coincide and
    # classes cluster, the loss is lower than with the labels mixed across the clusters.
    e = torch.eye(4)
    view = torch.stack([e[0], e[0] + 0.1 * e[2], e[1], e[1] + 0.1 * e[3]])
    both = torch.cat([view, view])  # identical views
    labels = torch.tensor([0, 0, 1, 1])
    grouped = supcon_loss(both, labels.repeat(2))
    mixed = supcon_loss(both, torch.tensor([0, 1, 0, 1]).repeat(2))
    assert grouped < mixed
    logits = torch.zeros(4, 2)
    ce = torch.nn.functional.cross_entropy(logits, labels)
    via_combined = combined_loss(logits, both, labels, kind="supcon", weight=0.5)  # labels repeated inside
    assert via_combined.item() == pytest.approx((ce + 0.5 * grouped).item(), rel=1e-6)


def test_supcon_skips_anchors_without_positives():
    feats = torch.randn(5, 8, requires_grad=True)
    loss = supcon_loss(feats, torch.tensor([0, 0, 1, 2, 3]))  # only the two 0s are anchors
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(feats.grad).all()
    none = supcon_loss(feats, torch.tensor([0, 1, 2, 3, 4]))
    assert none.item() == 0.0 and none.requires_grad


def test_push_pull_zero_when_separated_larger_when_swapped():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = F.one_hot(labels, 3).float() * 20.0
    assert semi_push_pull_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    swapped = semi_push_pull_loss(logits, torch.tensor([1, 1, 2, 2, 0, 0]))
    assert swapped.item() > 0.5


def test_push_pull_by_hand_softmax_once():
    """Logits = log(probabilities): one softmax gives these probabilities back, a second
    softmax would give other numbers and other losses."""
    probs = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.5, 0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    logits = probs.log().requires_grad_(True)
    # beta 0.9, 2 samples a class: k = 1, boundaries 0.9 and 0.8; pulls mean(0, 0.3) twice;
    # nothing of the other class reaches 0.6 (class 0) or 0.5 (class 1)
    loss = semi_push_pull_loss(logits, labels, beta=0.9, margin=0.3)
    assert loss.item() == pytest.approx(0.3, abs=1e-5)
    # beta 1: k = 2, boundaries 0.6 and 0.5, no pull; pushes 0.5 - 0.3 and 0.4 - 0.2
    assert semi_push_pull_loss(logits, labels, beta=1.0).item() == pytest.approx(0.4, abs=1e-5)
    # a fixed boundary 0.7 (push boundary 0.4) for both classes:
    # class 0: pull [0.6] -> 0.1; push [0.2, 0.5] -> 0.5 - 0.4 = 0.1
    # class 1: pull [0.5] -> 0.2; push [0.1, 0.4] -> 0.4 sits on the boundary: 0
    fixed = semi_push_pull_loss(logits, labels, boundary=0.7)
    assert fixed.item() == pytest.approx(0.4, abs=1e-5)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_combined_loss():
    torch.manual_seed(0)
    logits, feats, labels = torch.randn(8, 3), torch.randn(8, 16), torch.arange(8) % 3
    assert torch.equal(combined_loss(logits, feats, labels, kind="none"), F.cross_entropy(logits, labels))
    ce = F.cross_entropy(logits, labels)
    sup = combined_loss(logits, feats, labels, kind="supcon", weight=0.5)
    assert sup.item() == pytest.approx((ce + 0.5 * supcon_loss(feats, labels)).item(), rel=1e-6)
    pp = combined_loss(logits, None, labels, kind="push_pull", weight=0.1)
    assert pp.item() == pytest.approx((ce + 0.1 * semi_push_pull_loss(logits, labels)).item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown contrastive kind"):
        combined_loss(logits, feats, labels, kind="triplet")
    with pytest.raises(ValueError, match="needs the features"):
        combined_loss(logits, None, labels, kind="supcon")
