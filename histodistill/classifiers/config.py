"""The classifiers' configurations: the real-trained ConvNet (notebook 03's judge and notebook
04's embedding network) and the recipe of every downstream model (notebooks 05-07)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClassifierConfig:
    """The ConvNet trained on real train images: the pool's embedding network and judge.

    The paper's embedding network: width 128, instance norm, ReLU, 2x2 average pooling
    after every block; its feature is the flattened output of the last block."""

    width: int = 128  # channels of every convolution block
    depth: int | None = None  # blocks; None: chosen from the image size (3 at 28-32 px)
    epochs: int = 40  # passes over the real train split
    batch_size: int = 128  # images per step
    lr: float = 0.01  # peak SGD learning rate (cosine decay to 0)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay
    augment: bool = True  # random flips and 90-degree rotations (tissue has no orientation)
    seed: int = 0  # seed of initialisation, shuffling and augmentation

    def __post_init__(self) -> None:
        if self.width < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("width, epochs and batch_size must be positive")
        if self.depth is not None and self.depth < 1:
            raise ValueError("depth must be at least 1 (or None for automatic)")


NETWORKS = ("convnet", "resnet18")
# Contrastive terms next to cross-entropy (losses.combined_loss): "supcon" is the reference
# SupCon (two augmented views, projection head), "supcon_1view" the single-view form on the
# network's features, "push_pull" the released code's semi-push-pull on class scores.
CONTRASTIVE = ("none", "supcon", "supcon_1view", "push_pull")


@dataclass(frozen=True)
class DownstreamConfig:
    """How one downstream classifier is trained on a (distilled) training set (METHOD step 7).

    Training is budgeted in optimisation steps, one budget for every training set (a
    distilled set of 90 images and the full real train set alike), so no row gets more
    training than another. The budget is chosen on val where the val accuracy has plateaued
    (`budget.choose`, notebook 05). The paper: 1000 epochs of an IPC-100 set (900 images,
    batch 256: 4000 steps), lr 1e-3, warm-up 500 epochs, full-width networks. A CPU profile
    trains narrower networks at a higher learning rate."""

    network: str = "convnet"  # convnet | resnet18
    width_scale: float = 1.0  # channels x this; 1 = the paper's widths (ConvNet 128, ResNet-18 64..512)
    steps: int = 600  # optimisation steps, whatever the set's size (a distilled set often fits in one batch)
    batch_size: int = 256  # images per step
    lr: float = 0.01  # peak SGD learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay
    warmup_fraction: float = 0.5  # share of the steps warming up linearly, then cosine decay (paper: 500 of 1000)
    ema_decay: float = 0.995  # weight EMA (warm-up as diffusers'); the EMA weights are evaluated and kept
    dsa: bool = True  # differentiable Siamese augmentation, one family per batch
    contrastive: str = "none"  # none | supcon (two views, projection head) | supcon_1view | push_pull (released code's)
    contrastive_weight: float = 0.1  # weight of the contrastive term next to cross-entropy
    eval_every: int = 10  # steps between val evaluations (the last step is always evaluated)
    seed: int = 0  # seed of initialisation, batches and augmentation

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"network {self.network!r} is not one of {NETWORKS}")
        if self.contrastive not in CONTRASTIVE:
            raise ValueError(f"contrastive {self.contrastive!r} is not one of {CONTRASTIVE}")
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.width_scale <= 0:
            raise ValueError("steps, batch_size, eval_every and width_scale must be positive")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError("warmup_fraction must lie in [0, 1)")
