"""The one training loop of the classifiers: it trains the judge (the real-trained ConvNet of
notebook 03), the downstream networks of notebooks 05-06 and the audit's reference models of
notebook 07, and judges each once on test.

    >>> model, history = training.train_judge(train_x, train_y, val_x, val_y, 9, ClassifierConfig())
    >>> model, history = training.train_on_set(train_x, train_y, val_x, val_y, 9, cfg)
    >>> training.evaluate_on_test(model, test_x, test_y)   # touch test once, at the very end

What the loop does is a `Loop`: the network, the step budget, SGD (momentum, weight decay)
and its learning-rate schedule, a weight EMA or none, the augmentation, the loss, how often
val is evaluated, what selects the kept evaluation and the history's columns. Two recipes map
onto it. `DownstreamConfig` (`downstream_loop`) is the paper's downstream training (its
step 7, classifiers on the distilled set): a linear warm-up then cosine decay, an exponential
moving average of the weights, differentiable Siamese augmentation (one family per batch), and
cross-entropy optionally plus a contrastive term: the reference SupCon ("supcon": two
independently augmented views of each batch, cross-entropy on the first, SupCon on both views'
embeddings through a projection head that is dropped after training; Khosla et al. 2020),
SupCon on one view's features ("supcon_1view"), or the released code's semi-push-pull on class
scores; val every `eval_every` steps, the best val AUC kept. `ClassifierConfig` (`judge_loop`)
is the judge's: a ConvNet of the configured width and depth, whole epochs, cosine decay from
the first step, no EMA, a random flip or turn per image, cross-entropy, val after every epoch,
the best val accuracy kept. Unlike the released code:

- train, val and test images get the same normalisation (the train set's channel
  statistics, stored in the model) and must share one resolution;
- cross-entropy sees raw logits (the softmax is never applied twice);
- the evaluation kept is the one that scores best on **val**; test is not looked at;
- the downstream budget is a number of steps, the same for every training set (`DownstreamConfig.steps`).

A seeded run repeats bit for bit on one CPU. A table's many models train side by side in
worker processes (`evaluate.evaluation.train_together`), one model per process.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
import pandas as pd
import torch
from diffusers.training_utils import EMAModel

from .config import ClassifierConfig, DownstreamConfig
from ..progress import tqdm
from . import convnet, metrics
from .augmentation import DSA, random_dihedral
from .losses import ProjectionHead, combined_loss
from .networks import build_network

# A history's columns, each (column, field of the evaluation's record). Cached histories
# keep their columns: the judge's names the training loss train_loss and has no AUC or F1.
DOWNSTREAM_HISTORY = tuple((c, c) for c in ("step", "epoch", "loss", "val_acc", "val_auc", "val_macro_f1", "lr"))
JUDGE_HISTORY = (("epoch", "epoch"), ("train_loss", "loss"), ("train_acc", "train_acc"), ("val_acc", "val_acc"),
                 ("lr", "lr"))


@dataclass(frozen=True)
class Loop:
    """What the training loop does; `downstream_loop` and `judge_loop` make one of a recipe."""

    build: Callable[..., torch.nn.Module]  # build(n_classes=, image_size=, in_channels=): a fresh network
    label: str  # of the progress bar
    steps: int  # optimisation steps; a pass over the set is an epoch, the budget may end mid-pass
    batch_size: int
    lr: float  # peak SGD learning rate
    momentum: float
    weight_decay: float
    warmup_fraction: float = 0.0  # linear warm-up before the cosine decay (`learning_rate`)
    ema_decay: float | None = None  # None: the trained weights themselves are evaluated and kept
    augment: str | None = None  # dsa (one family per batch) | dihedral (a flip or turn per image) | None
    contrastive: str = "none"  # see `losses.combined_loss`
    contrastive_weight: float = 0.1
    eval_every: int = 1  # steps between val evaluations (the last step is always evaluated)
    select_by: str = "auc"  # auc (accuracy where AUC is undefined) | acc
    history: tuple[tuple[str, str], ...] = DOWNSTREAM_HISTORY

    def __post_init__(self) -> None:
        if self.augment not in ("dsa", "dihedral", None) or self.select_by not in ("auc", "acc"):
            raise ValueError(f"unknown augmentation {self.augment!r} or selection {self.select_by!r}")

    def rate(self, step: int) -> float:
        """The learning rate of step `step` (from 0)."""
        return learning_rate(step, self.steps, self.lr, self.warmup_fraction)


def downstream_loop(recipe: DownstreamConfig) -> Loop:
    """The loop of a downstream recipe (its seed aside, which `train` takes)."""
    return Loop(partial(build_network, recipe.network, width_scale=recipe.width_scale), f"train {recipe.network}",
                recipe.steps, recipe.batch_size, recipe.lr, recipe.momentum, recipe.weight_decay,
                warmup_fraction=recipe.warmup_fraction, ema_decay=recipe.ema_decay,
                augment="dsa" if recipe.dsa else None, contrastive=recipe.contrastive,
                contrastive_weight=recipe.contrastive_weight, eval_every=recipe.eval_every, select_by="auc",
                history=DOWNSTREAM_HISTORY)


def judge_loop(cfg: ClassifierConfig, n_train: int) -> Loop:
    """The judge's loop on a train split of `n_train` images: `cfg.epochs` whole passes, val
    evaluated after each (every pass has the same number of steps)."""
    per_epoch = math.ceil(n_train / cfg.batch_size)
    return Loop(partial(convnet.ConvNet, width=cfg.width, depth=cfg.depth), "classifier", cfg.epochs * per_epoch,
                cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay, ema_decay=None,
                augment="dihedral" if cfg.augment else None, contrastive="none", eval_every=per_epoch,
                select_by="acc", history=JUDGE_HISTORY)


def learning_rate(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up from 0 to `peak` over the first `warmup_fraction` of the steps, then
    cosine decay to 0."""
    warm = int(total * warmup_fraction)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


def train_judge(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    n_classes: int,
    cfg: ClassifierConfig,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> tuple[convnet.ConvNet, pd.DataFrame]:
    """Train the judge, a ConvNet, on uint8 images with `cfg` (`judge_loop`); returns the
    weights of its best-val epoch (eval mode; ties keep the earlier epoch) and one history row
    per epoch: epoch, train_loss and train_acc (over that epoch's augmented batches), val_acc,
    and lr (of the epoch's last step)."""
    return train(train_images, train_labels, val_images, val_labels, n_classes,
                 judge_loop(cfg, len(train_labels)), cfg.seed, progress, device)


def train_on_set(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    n_classes: int,
    recipe: DownstreamConfig,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Train `recipe.network` on uint8 images at `recipe.seed` for `recipe.steps` steps;
    returns the EMA model of the best val evaluation (eval mode) and one history row per
    evaluation (step, epoch, training loss since the last evaluation, val acc/auc/macro F1,
    lr)."""
    return train(train_images, train_labels, val_images, val_labels, n_classes, downstream_loop(recipe),
                 recipe.seed, progress, device)


def _check_sets(train_images: np.ndarray, train_labels: np.ndarray, val_images: np.ndarray,
                val_labels: np.ndarray, n_classes: int) -> None:
    for name, images, labels in (("train", train_images, train_labels), ("val", val_images, val_labels)):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise ValueError(f"{name} images must be uint8 (N, S, S, C), not {images.dtype} {images.shape}")
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError(f"{name} needs images, one label each ({len(images)} vs {len(labels)})")
        if np.min(labels) < 0 or np.max(labels) >= n_classes:
            raise ValueError(f"{name} labels must lie in 0..{n_classes - 1}")
    if train_images.shape[1:] != val_images.shape[1:]:
        raise ValueError(f"train and val images differ in shape: {train_images.shape[1:]} vs "
                         f"{val_images.shape[1:]}; resize them to one resolution")


def _augmenter(kind: str | None) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    if kind == "dsa":
        dsa = DSA()
        return lambda x, generator: dsa.augment(x, generator)[0]
    if kind == "dihedral":
        return random_dihedral
    return lambda x, generator: x


def train(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    n_classes: int,
    loop: Loop,
    seed: int,
    progress: bool = True,
    device: str | torch.device | None = None,
) -> tuple[torch.nn.Module, pd.DataFrame]:
    """Train `loop`'s network on uint8 images at `seed`; returns the model of its best val
    evaluation (eval mode; the EMA weights where the loop keeps an EMA; ties keep the earlier
    evaluation) and one history row per evaluation (the loop's columns)."""
    _check_sets(train_images, train_labels, val_images, val_labels, n_classes)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    two_views = loop.contrastive == "supcon"  # the reference SupCon: two views and a projection head
    with torch.random.fork_rng(devices=[]):  # seed the initialisation, leave the global RNG be
        torch.manual_seed(seed)
        model = loop.build(n_classes=n_classes, image_size=train_images.shape[1], in_channels=train_images.shape[3])
        # Drawn after the network, whose initialisation stays the cross-entropy run's.
        head = ProjectionHead(model.feature_dim) if two_views else None
    mean, std = convnet.channel_stats(train_images)  # one normalisation for train, val and test
    model.mean.copy_(torch.from_numpy(mean))
    model.std.copy_(torch.from_numpy(std))
    model.to(device)
    trained = list(model.parameters()) + (list(head.to(device).parameters()) if head is not None else [])
    # The images stay uint8 until their batch is drawn: a float copy of a full train split
    # would not fit (the values are the same either way, the ops being element-wise).
    images = torch.from_numpy(np.ascontiguousarray(train_images))
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    # diffusers' EMA (as for the denoiser): its decay warms up as min(decay, (1+t)/(10+t)),
    # so a short run's average is not dominated by the random initial weights.
    ema = EMAModel(list(model.parameters()), decay=loop.ema_decay) if loop.ema_decay is not None else None
    optimiser = torch.optim.SGD(trained, lr=loop.lr, momentum=loop.momentum, weight_decay=loop.weight_decay)
    generator = torch.Generator().manual_seed(seed)  # batches and augmentation
    augment = _augmenter(loop.augment)
    evaluated = copy.deepcopy(model)  # carries the weights each evaluation scores
    history, best_score, best_state = [], -1.0, None
    loss_sum, correct, seen = 0.0, 0, 0  # since the last evaluation
    bar = tqdm(total=loop.steps, desc=loop.label, unit="step", disable=not progress)
    step, epoch = 0, 0
    while step < loop.steps:
        order = torch.randperm(len(labels), generator=generator)  # one pass; the budget may end mid-pass
        epoch += 1
        for start in range(0, len(labels), loop.batch_size):
            idx = order[start : start + loop.batch_size]
            x = convnet.to_tensor(images[idx], mean, std)
            view = augment(x, generator)
            if two_views:  # a second, independently augmented view of the same images
                view = torch.cat([view, augment(x, generator)])
            x, y = view.to(device), labels[idx].to(device)
            lr = loop.rate(step)
            for group in optimiser.param_groups:
                group["lr"] = lr
            logits, features = model(x, with_features=True)
            if two_views:  # cross-entropy on the first view; SupCon on both views' projections
                logits, features = logits[: len(y)], head(features)
            uses_features = two_views or loop.contrastive == "supcon_1view"
            loss = combined_loss(logits, features if uses_features else None, y, loop.contrastive,
                                 loop.contrastive_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if ema is not None:
                ema.step(model.parameters())
            step += 1
            bar.update(1)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if step % loop.eval_every == 0 or step == loop.steps:
                weights = ema.shadow_params if ema is not None else model.parameters()
                for target, source in zip(evaluated.parameters(), weights):
                    target.data.copy_(source.detach())
                scores = val_scores(evaluated, val_images, val_labels)
                history.append({"step": step, "epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
                                "val_acc": scores["acc"], "val_auc": scores["auc"],
                                "val_macro_f1": scores["macro_f1"], "lr": lr})
                # Chosen on val only, by AUC (accuracy where a class is missing from val and AUC
                # is undefined) or by accuracy; ties keep the earlier evaluation.
                score = scores["acc"] if loop.select_by == "acc" or not np.isfinite(scores["auc"]) else scores["auc"]
                if score > best_score:
                    best_score, best_state = score, copy.deepcopy(evaluated.state_dict())
                loss_sum, correct, seen = 0.0, 0, 0
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val_acc=f"{scores['acc']:.3f}")
            if step == loop.steps:
                break
    bar.close()
    evaluated.load_state_dict(best_state)  # the last step is always evaluated, so one exists
    rows = [{column: row[field] for column, field in loop.history} for row in history]
    return evaluated.eval(), pd.DataFrame(rows, columns=[column for column, _ in loop.history])


def val_scores(model: torch.nn.Module, val_images: np.ndarray, val_labels: np.ndarray) -> dict:
    """ACC, AUC and macro F1 of `model` on val: what each evaluation records and selects by."""
    return metrics.evaluate(val_labels, convnet.predict(model, val_images))


def evaluate_on_test(model: torch.nn.Module, test_images: np.ndarray, test_labels: np.ndarray) -> dict:
    """ACC, AUC and macro F1 of `model` on the test split: call once per trained model."""
    return metrics.evaluate(test_labels, convnet.predict(model, test_images))
