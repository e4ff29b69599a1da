"""Training classifiers on (small) training sets and judging each once on test.

    >>> model, history = downstream.train_on_set(train_x, train_y, val_x, val_y, 9, cfg)
    >>> results = downstream.train_runs(sets, val_x, val_y, 9, cfg, seeds=[0, 1, 2, 3, 4])
    >>> downstream.evaluate_on_test(model, test_x, test_y)   # touch test once, at the very end

The recipe follows the paper's downstream training (see METHOD.md, step 7): SGD with
momentum and weight decay, a linear warm-up then cosine decay, an exponential moving
average of the weights, differentiable Siamese augmentation (one family per batch), and
cross-entropy optionally plus a contrastive term: the reference SupCon ("supcon": two
independently augmented views of each batch, cross-entropy on the first, SupCon on both
views' embeddings through a projection head that is dropped after training; Khosla et al.
2020), SupCon on one view's features ("supcon_1view", this project's former form), or the
released code's semi-push-pull on class scores. Unlike the released code:

- train, val and test images get the same normalisation (the train set's channel
  statistics, stored in the model) and must share one resolution;
- cross-entropy sees raw logits (the softmax is never applied twice);
- the evaluation kept is the one whose EMA weights score best on **val**; test is not looked at;
- the budget is a number of steps, the same for every training set (`DownstreamConfig.steps`).

**Several runs train as one.** A table row is trained once per seed on sets of equal size
(the same set, or one random subset per run). On a few CPU cores a small run spends most of
its time in per-step overhead, so `train_runs` stacks the runs' weights
(`torch.func.stack_module_state`) and serves every run with one `vmap`-ed forward pass. Each
run keeps its own initialisation, batch order, augmentation draws, normalisation, EMA and
best val evaluation, as if trained alone: SGD (momentum, weight decay) and the EMA act element
by element, and the loss is the sum of the runs' losses, so each run's gradient is its own.
The batched convolution sums in another order than a single one, so weights agree to float
precision after a few steps (tested) and drift apart over a long run as they would on
another CPU. `train_on_set` is `train_runs` with one run.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
from diffusers.training_utils import EMAModel
from torch.func import functional_call, stack_module_state, vmap
from ..progress import tqdm

from . import convnet, metrics
from ..config import DownstreamConfig
from .augmentation import DSA
from .losses import ProjectionHead, combined_loss
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
    """Train `recipe.network` on uint8 images at `recipe.seed` for `recipe.steps` steps;
    returns the EMA model of the best val evaluation (eval mode) and one history row per
    evaluation (step, epoch, training loss since the last evaluation, val acc/auc/macro F1,
    lr)."""
    return train_runs([(train_images, train_labels)], val_images, val_labels, n_classes, recipe,
                      [recipe.seed], progress, device)[0]


def _check_sets(train_sets, val_images: np.ndarray, seeds: list[int]) -> None:
    if not train_sets or len(train_sets) != len(seeds):
        raise ValueError(f"need one training set per seed, not {len(train_sets)} sets for {len(seeds)} seeds")
    for name, images in [("val", val_images)] + [(f"train set {i}", s[0]) for i, s in enumerate(train_sets)]:
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"{name} images must be uint8 (N, S, S, C), not {images.dtype} {images.shape}")
    shapes = {s[0].shape for s in train_sets}
    if len(shapes) != 1:
        raise ValueError(f"the runs trained together need training sets of one shape, not {sorted(shapes)}")
    if train_sets[0][0].shape[1:] != val_images.shape[1:]:
        raise ValueError(f"train and val images differ in shape: {train_sets[0][0].shape[1:]} vs "
                         f"{val_images.shape[1:]}; resize them to one resolution")


def train_runs(
    train_sets: list[tuple[np.ndarray, np.ndarray]],
    val_images: np.ndarray,
    val_labels: np.ndarray,
    n_classes: int,
    recipe: DownstreamConfig,
    seeds: list[int],
    progress: bool = True,
    device: str | torch.device | None = None,
) -> list[tuple[torch.nn.Module, pd.DataFrame]]:
    """Train `recipe.network` once per seed, run i on `train_sets[i]` (uint8 images, labels;
    all of one shape) with `recipe` at seed `seeds[i]`; returns, per run, the EMA model of
    its best val evaluation (eval mode) and its history (step, epoch, loss, val acc/auc/macro
    F1, lr)."""
    _check_sets(train_sets, val_images, seeds)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    image_size, channels = train_sets[0][0].shape[1], train_sets[0][0].shape[3]
    two_views = recipe.contrastive == "supcon"  # the reference SupCon: two views and a projection head
    models, heads, inputs, targets = [], [], [], []
    for seed, (images, labels) in zip(seeds, train_sets):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_network(recipe.network, n_classes, image_size, channels, recipe.width_scale)
            if two_views:  # drawn after the network, whose initialisation stays the CE run's
                heads.append(ProjectionHead(model.feature_dim).to(device))
        mean, std = convnet.channel_stats(images)  # one normalisation for the run's train, val and test
        model.mean.copy_(torch.from_numpy(mean))
        model.std.copy_(torch.from_numpy(std))
        models.append(model.to(device))
        inputs.append(convnet.to_tensor(images, mean, std))
        targets.append(torch.as_tensor(np.asarray(labels), dtype=torch.long))
    params, buffers = stack_module_state(models)
    names = list(params)
    skeleton = copy.deepcopy(models[0]).to("meta")

    def forward(p, b, x):
        return functional_call(skeleton, (p, b), (x,), {"with_features": True})

    def single_forward(p, b, x):
        # One run needs no vmap (and group norm under vmap fails on a run dimension of 1).
        logits, features = forward({k: v[0] for k, v in p.items()}, {k: v[0] for k, v in b.items()}, x[0])
        return logits[None], features[None]

    batched_forward = vmap(forward) if len(seeds) > 1 else single_forward
    trained = [params[n] for n in names]
    if two_views:
        head_params, _ = stack_module_state(heads)
        head_skeleton = copy.deepcopy(heads[0]).to("meta")

        def project(hp, features):
            return functional_call(head_skeleton, hp, (features,))

        batched_project = (vmap(project) if len(seeds) > 1
                           else lambda hp, f: project({k: v[0] for k, v in hp.items()}, f[0])[None])
        trained += list(head_params.values())
    # diffusers' EMA (as for the denoiser): its decay warms up as min(decay, (1+t)/(10+t)),
    # so a short run's average is not dominated by the random initial weights.
    ema = EMAModel([params[n] for n in names], decay=recipe.ema_decay)
    optimiser = torch.optim.SGD(trained, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    augmenter = DSA() if recipe.dsa else None
    n = len(targets[0])
    total = recipe.steps
    histories: list[list[dict]] = [[] for _ in seeds]
    best_scores, best_states = [-1.0] * len(seeds), [None] * len(seeds)
    eval_models = [copy.deepcopy(m) for m in models]  # carry each run's EMA weights for evaluation
    with_features = recipe.contrastive == "supcon_1view"
    label = f"train {recipe.network}" + (f" x{len(seeds)}" if len(seeds) > 1 else "")
    bar = tqdm(total=total, desc=label, unit="step", disable=not progress)
    step, epoch = 0, 0
    loss_sums, seen = [0.0] * len(seeds), 0  # training loss since the last evaluation
    while step < total:
        # One pass over the set in a fresh order per run; the budget may end mid-pass.
        orders = [torch.randperm(n, generator=g) for g in generators]
        epoch += 1
        for start in range(0, n, recipe.batch_size):
            xs, ys = [], []
            for run, (order, generator) in enumerate(zip(orders, generators)):
                idx = order[start : start + recipe.batch_size]
                x = inputs[run][idx]
                view = augmenter.augment(x, generator)[0] if augmenter is not None else x
                if two_views:  # a second, independently augmented view of the same images
                    view = torch.cat([view, augmenter.augment(x, generator)[0] if augmenter is not None else x])
                xs.append(view)
                ys.append(targets[run][idx])
            x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
            lr = learning_rate(step, total, recipe.lr, recipe.warmup_fraction)
            for group in optimiser.param_groups:
                group["lr"] = lr
            logits, features = batched_forward(params, buffers, x)
            if two_views:  # cross-entropy on the first view; SupCon on both views' projections
                logits, features = logits[:, : y.shape[1]], batched_project(head_params, features)
            losses = [combined_loss(logits[r], features[r] if with_features or two_views else None, y[r],
                                    recipe.contrastive, recipe.contrastive_weight) for r in range(len(seeds))]
            optimiser.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            optimiser.step()
            ema.step([params[n_] for n_ in names])
            step += 1
            bar.update(1)
            for r, loss in enumerate(losses):
                loss_sums[r] += loss.item() * y.shape[1]
            seen += y.shape[1]
            if step % recipe.eval_every == 0 or step == total:
                _evaluate(eval_models, names, ema, val_images, val_labels, histories, best_scores, best_states,
                          {"step": step, "epoch": epoch, "lr": lr}, [s_ / seen for s_ in loss_sums])
                loss_sums, seen = [0.0] * len(seeds), 0
                bar.set_postfix(loss=f"{np.mean([h[-1]['loss'] for h in histories]):.3f}",
                                val_acc=f"{np.mean([h[-1]['val_acc'] for h in histories]):.3f}")
            if step == total:
                break
    bar.close()
    out = []
    for model, state, history in zip(eval_models, best_states, histories):
        model.load_state_dict(state)  # the last step is always evaluated, so one exists
        out.append((model.eval(), pd.DataFrame(history)))
    return out


def _evaluate(eval_models, names, ema, val_images, val_labels, histories, best_scores, best_states,
              when: dict, losses: list[float]) -> None:
    """Score each run's EMA weights on val, append a history row, keep the best state."""
    for r, model in enumerate(eval_models):
        state = {name: shadow[r] for name, shadow in zip(names, ema.shadow_params)}
        model.load_state_dict(state, strict=False)  # buffers (mean, std) are the run's already
        scores = metrics.evaluate(val_labels, convnet.predict(model, val_images))
        histories[r].append({"step": when["step"], "epoch": when["epoch"], "loss": losses[r],
                             "val_acc": scores["acc"], "val_auc": scores["auc"],
                             "val_macro_f1": scores["macro_f1"], "lr": when["lr"]})
        # Selection on val only, by AUC (accuracy when a class is missing from val and AUC is
        # undefined); ties keep the earlier step.
        score = scores["auc"] if np.isfinite(scores["auc"]) else scores["acc"]
        if score > best_scores[r]:
            best_scores[r], best_states[r] = score, copy.deepcopy(model.state_dict())


def evaluate_on_test(model: torch.nn.Module, test_images: np.ndarray, test_labels: np.ndarray) -> dict:
    """ACC, AUC and macro F1 of `model` on the test split: call once per trained model."""
    return metrics.evaluate(test_labels, convnet.predict(model, test_images))
