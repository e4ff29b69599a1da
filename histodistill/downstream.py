"""Training a classifier on a (small) training set and judging it once on test.

    >>> model, history = downstream.train_on_set(train_x, train_y, val_x, val_y, 9, cfg)
    >>> downstream.evaluate_on_test(model, test_x, test_y)   # touch test once, at the very end

The recipe follows the paper's downstream training (see METHOD.md, step 7): SGD with
momentum and weight decay, a linear warm-up then cosine decay, an exponential moving
average of the weights, differentiable Siamese augmentation (one family per batch), and
cross-entropy optionally plus a contrastive term. Unlike the released code:

- train, val and test images get the same normalisation (the train set's channel
  statistics, stored in the model) and must share one resolution;
- cross-entropy sees raw logits (the softmax is never applied twice);
- the epoch kept is the one whose EMA weights score best on **val**; test is not looked at.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from . import convnet, metrics
from .config import DownstreamConfig
from .dsa import DSA
from .losses import combined_loss
from .networks import build_network


def learning_rate(step: int, total: int, peak: float, warmup_fraction: float) -> float:
    """Linear warm-up from 0 to `peak` over the first `warmup_fraction` of the steps, then
    cosine decay to 0."""
    warm = int(total * warmup_fraction)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * peak * (1 + math.cos(math.pi * progress))


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
    """Train `recipe.network` on uint8 images; returns the EMA model of the best val epoch
    (eval mode) and one history row per evaluation (epoch, loss, val acc/auc/macro F1, lr)."""
    for name, images in (("train", train_images), ("val", val_images)):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"{name} images must be uint8 (N, S, S, C), not {images.dtype} {images.shape}")
    if train_images.shape[1:] != val_images.shape[1:]:
        raise ValueError(f"train and val images differ in shape: {train_images.shape[1:]} vs "
                         f"{val_images.shape[1:]}; resize them to one resolution")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = build_network(recipe.network, n_classes, train_images.shape[1], train_images.shape[3],
                              recipe.width_scale)
    mean, std = convnet.channel_stats(train_images)  # one normalisation for train, val and test
    model.mean.copy_(torch.from_numpy(mean))
    model.std.copy_(torch.from_numpy(std))
    model.to(device)
    # diffusers' EMA (as for the denoiser): its decay warms up as min(decay, (1+t)/(10+t)),
    # so a short run's average is not dominated by the random initial weights (a fixed
    # 0.995 keeps 0.995^100 = 61 % of them after 100 steps).
    ema = EMAModel(model.parameters(), decay=recipe.ema_decay)
    ema_model = copy.deepcopy(model)  # carries the EMA weights for evaluation
    optimiser = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    generator = torch.Generator().manual_seed(recipe.seed)
    augmenter = DSA() if recipe.dsa else None
    x_all = convnet.to_tensor(train_images, mean, std)
    y_all = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    steps_per_epoch = math.ceil(len(y_all) / recipe.batch_size)
    total, step, rows = recipe.epochs * steps_per_epoch, 0, []
    best_score, best_state = -1.0, None
    bar = tqdm(range(1, recipe.epochs + 1), desc=f"train {recipe.network}", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(y_all), generator=generator)
        loss_sum = 0.0
        for start in range(0, len(order), recipe.batch_size):
            idx = order[start : start + recipe.batch_size]
            x, y = x_all[idx], y_all[idx]
            if augmenter is not None:
                x, _ = augmenter.augment(x, generator)
            x, y = x.to(device), y.to(device)
            lr = learning_rate(step, total, recipe.lr, recipe.warmup_fraction)
            for group in optimiser.param_groups:
                group["lr"] = lr
            loss = combined_loss(model(x), model.features(x) if recipe.contrastive == "supcon" else None, y,
                                 recipe.contrastive, recipe.contrastive_weight)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            ema.step(model.parameters())
            step += 1
            loss_sum += loss.item() * len(y)
        if epoch % recipe.eval_every == 0 or epoch == recipe.epochs:
            ema.copy_to(ema_model.parameters())
            scores = metrics.evaluate(val_labels, convnet.predict(ema_model, val_images))
            rows.append({"epoch": epoch, "loss": loss_sum / len(y_all), "val_acc": scores["acc"],
                         "val_auc": scores["auc"], "val_macro_f1": scores["macro_f1"], "lr": lr})
            # Selection on val only, by AUC (accuracy when a class is missing from val and
            # AUC is undefined); ties keep the earlier epoch.
            score = scores["auc"] if np.isfinite(scores["auc"]) else scores["acc"]
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(ema_model.state_dict())
            bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}", val_acc=f"{scores['acc']:.3f}")
    ema_model.load_state_dict(best_state)  # the last epoch is always evaluated, so one exists
    return ema_model.eval(), pd.DataFrame(rows)


def evaluate_on_test(model: torch.nn.Module, test_images: np.ndarray, test_labels: np.ndarray) -> dict:
    """ACC, AUC and macro F1 of `model` on the test split: call once per trained model."""
    return metrics.evaluate(test_labels, convnet.predict(model, test_images))
