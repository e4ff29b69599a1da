"""The one training loop of the classifiers: it trains the judge (the real-trained ConvNet of
notebook 03), the downstream networks of notebooks 05-06 and the audit's reference models of
notebook 07, and judges each once on test.

    >>> model, history = training.train_judge(train_x, train_y, val_x, val_y, 9, ClassifierConfig())
    >>> model, history = training.train_on_set(train_x, train_y, val_x, val_y, 9, cfg)
    >>> results = training.train_runs(sets, val_x, val_y, 9, cfg, seeds=[0, 1, 2, 3, 4])
    >>> training.evaluate_on_test(model, test_x, test_y)   # touch test once, at the very end

What the loop does is a `Loop`: the network, the step budget, SGD (momentum, weight decay)
and its learning-rate schedule, a weight EMA or none, the augmentation, the loss, how often
val is evaluated, what selects the kept evaluation and the history's columns. Two recipes map
onto it. `DownstreamConfig` (`downstream_loop`) is the paper's downstream training (its
step 7, classifiers on the distilled set): a linear warm-up then cosine decay, an exponential moving average of the
weights, differentiable Siamese augmentation (one family per batch), and cross-entropy
optionally plus a contrastive term: the reference SupCon ("supcon": two independently
augmented views of each batch, cross-entropy on the first, SupCon on both views' embeddings
through a projection head that is dropped after training; Khosla et al. 2020), SupCon on one
view's features ("supcon_1view", this project's former form), or the released code's
semi-push-pull on class scores; val every `eval_every` steps, the best val AUC kept.
`ClassifierConfig` (`judge_loop`) is the judge's: a ConvNet of the configured width and depth,
whole epochs, cosine decay from the first step, no EMA, a random flip or turn per image,
cross-entropy, val after every epoch, the best val accuracy kept. Unlike the released code:

- train, val and test images get the same normalisation (the train set's channel
  statistics, stored in the model) and must share one resolution;
- cross-entropy sees raw logits (the softmax is never applied twice);
- the evaluation kept is the one that scores best on **val**; test is not looked at;
- the downstream budget is a number of steps, the same for every training set (`DownstreamConfig.steps`).

**Several runs train as one.** A table row is trained once per seed on sets of equal size
(the same set, or one random subset per run). On a few CPU cores a small run spends most of
its time in per-step overhead, so `train_runs` stacks the runs' weights
(`torch.func.stack_module_state`) and serves every run with one `vmap`-ed forward pass. Each
run keeps its own initialisation, batch order, augmentation draws, normalisation, EMA and
best val evaluation, as if trained alone: SGD (momentum, weight decay) and the EMA act element
by element, and the loss is the sum of the runs' losses, so each run's gradient is its own.
The batched convolution sums in another order than a single one, so weights agree to float
precision after a few steps (tested) and drift apart over a long run as they would on
another CPU. `train_on_set` and `train_judge` are `train_runs` with one run, which needs no
`vmap`: a seeded run repeats bit for bit on the CPU.
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
from torch.func import functional_call, stack_module_state, vmap
from ..progress import tqdm

from . import convnet, metrics
from ..config import ClassifierConfig, DownstreamConfig
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
    schedule: str = "warmup_cosine"  # warmup_cosine (`learning_rate`) | cosine (`cosine_rate`)
    warmup_fraction: float = 0.0  # of warmup_cosine
    ema_decay: float | None = None  # None: the trained weights themselves are evaluated and kept
    augment: str | None = None  # dsa (one family per batch) | dihedral (a flip or turn per image) | None
    contrastive: str = "none"  # see `losses.combined_loss`
    contrastive_weight: float = 0.1
    eval_every: int = 1  # steps between val evaluations (the last step is always evaluated)
    select_by: str = "auc"  # auc (accuracy where AUC is undefined) | acc
    history: tuple[tuple[str, str], ...] = DOWNSTREAM_HISTORY

    def __post_init__(self) -> None:
        if self.schedule not in ("warmup_cosine", "cosine") or self.augment not in ("dsa", "dihedral", None) \
                or self.select_by not in ("auc", "acc"):
            raise ValueError(f"unknown schedule {self.schedule!r}, augmentation {self.augment!r} or "
                             f"selection {self.select_by!r}")


def downstream_loop(recipe: DownstreamConfig) -> Loop:
    """The loop of a downstream recipe (its seed aside, which `train_runs` takes per run)."""
    return Loop(partial(build_network, recipe.network, width_scale=recipe.width_scale), f"train {recipe.network}",
                recipe.steps, recipe.batch_size, recipe.lr, recipe.momentum, recipe.weight_decay,
                schedule="warmup_cosine", warmup_fraction=recipe.warmup_fraction, ema_decay=recipe.ema_decay,
                augment="dsa" if recipe.dsa else None, contrastive=recipe.contrastive,
                contrastive_weight=recipe.contrastive_weight, eval_every=recipe.eval_every, select_by="auc",
                history=DOWNSTREAM_HISTORY)


def judge_loop(cfg: ClassifierConfig, n_train: int) -> Loop:
    """The judge's loop on a train split of `n_train` images: `cfg.epochs` whole passes, val
    evaluated after each (every pass has the same number of steps)."""
    per_epoch = math.ceil(n_train / cfg.batch_size)
    return Loop(partial(convnet.ConvNet, width=cfg.width, depth=cfg.depth), "classifier", cfg.epochs * per_epoch,
                cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay, schedule="cosine", ema_decay=None,
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


def cosine_rate(step: int, total: int, peak: float) -> float:
    """Cosine decay from `peak` at step 0 to 0, the judge's schedule: `learning_rate` without
    warm-up, but with the angle rounded as pi * step / total rather than pi * (step / total).
    The two differ in the last bit at about one step in five, and judges trained with this one
    are cached."""
    return 0.5 * peak * (1 + math.cos(math.pi * step / total))


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
    loop = judge_loop(cfg, len(train_labels))
    return train_runs([(train_images, train_labels)], val_images, val_labels, n_classes, loop, [cfg.seed],
                      progress, device)[0]


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


def _check_sets(train_sets, val_images: np.ndarray, val_labels: np.ndarray, n_classes: int,
                seeds: list[int]) -> None:
    if not train_sets or len(train_sets) != len(seeds):
        raise ValueError(f"need one training set per seed, not {len(train_sets)} sets for {len(seeds)} seeds")
    named = [(f"train set {i}", *s) for i, s in enumerate(train_sets)] + [("val", val_images, val_labels)]
    for name, images, labels in named:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise ValueError(f"{name} images must be uint8 (N, S, S, C), not {images.dtype} {images.shape}")
        if len(images) == 0 or len(images) != len(labels):
            raise ValueError(f"{name} needs images, one label each ({len(images)} vs {len(labels)})")
        if np.min(labels) < 0 or np.max(labels) >= n_classes:
            raise ValueError(f"{name} labels must lie in 0..{n_classes - 1}")
    shapes = {s[0].shape for s in train_sets}
    if len(shapes) != 1:
        raise ValueError(f"the runs trained together need training sets of one shape, not {sorted(shapes)}")
    if train_sets[0][0].shape[1:] != val_images.shape[1:]:
        raise ValueError(f"train and val images differ in shape: {train_sets[0][0].shape[1:]} vs "
                         f"{val_images.shape[1:]}; resize them to one resolution")


def _augmenter(kind: str | None) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    if kind == "dsa":
        dsa = DSA()
        return lambda x, generator: dsa.augment(x, generator)[0]
    if kind == "dihedral":
        return random_dihedral
    return lambda x, generator: x


def train_runs(
    train_sets: list[tuple[np.ndarray, np.ndarray]],
    val_images: np.ndarray,
    val_labels: np.ndarray,
    n_classes: int,
    recipe: DownstreamConfig | Loop,
    seeds: list[int],
    progress: bool = True,
    device: str | torch.device | None = None,
) -> list[tuple[torch.nn.Module, pd.DataFrame]]:
    """Train the recipe's network once per seed, run i on `train_sets[i]` (uint8 images,
    labels; all of one shape) at seed `seeds[i]`; returns, per run, the model of its best val
    evaluation (eval mode; the EMA weights where the recipe keeps an EMA) and its history (the
    recipe's columns; a downstream recipe's: step, epoch, loss, val acc/auc/macro F1, lr)."""
    loop = recipe if isinstance(recipe, Loop) else downstream_loop(recipe)
    _check_sets(train_sets, val_images, val_labels, n_classes, seeds)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    image_size, channels = train_sets[0][0].shape[1], train_sets[0][0].shape[3]
    two_views = loop.contrastive == "supcon"  # the reference SupCon: two views and a projection head
    models, heads, inputs, targets = [], [], [], []
    for seed, (images, labels) in zip(seeds, train_sets):
        with torch.random.fork_rng(devices=[]):  # seed the initialisation, leave the global RNG be
            torch.manual_seed(seed)
            model = loop.build(n_classes=n_classes, image_size=image_size, in_channels=channels)
            if two_views:  # drawn after the network, whose initialisation stays the CE run's
                heads.append(ProjectionHead(model.feature_dim).to(device))
        mean, std = convnet.channel_stats(images)  # one normalisation for the run's train, val and test
        model.mean.copy_(torch.from_numpy(mean))
        model.std.copy_(torch.from_numpy(std))
        models.append(model.to(device))
        # The images stay uint8 until their batch is drawn: a float copy of a full train split
        # would not fit (the values are the same either way, the ops being element-wise).
        inputs.append((torch.from_numpy(np.ascontiguousarray(images)), mean, std))
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
    ema = EMAModel([params[n] for n in names], decay=loop.ema_decay) if loop.ema_decay is not None else None
    optimiser = torch.optim.SGD(trained, lr=loop.lr, momentum=loop.momentum, weight_decay=loop.weight_decay)
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]  # batches and augmentation
    augment = _augmenter(loop.augment)
    n = len(targets[0])
    total = loop.steps
    histories: list[list[dict]] = [[] for _ in seeds]
    best_scores, best_states = [-1.0] * len(seeds), [None] * len(seeds)
    eval_models = [copy.deepcopy(m) for m in models]  # carry each run's evaluated weights
    with_features = loop.contrastive == "supcon_1view"
    bar = tqdm(total=total, desc=loop.label + (f" x{len(seeds)}" if len(seeds) > 1 else ""), unit="step",
               disable=not progress)
    step, epoch = 0, 0
    loss_sums, corrects, seen = [0.0] * len(seeds), [0] * len(seeds), 0  # since the last evaluation
    while step < total:
        # One pass over the set in a fresh order per run; the budget may end mid-pass.
        orders = [torch.randperm(n, generator=g) for g in generators]
        epoch += 1
        for start in range(0, n, loop.batch_size):
            xs, ys = [], []
            for run, (order, generator) in enumerate(zip(orders, generators)):
                idx = order[start : start + loop.batch_size]
                images, mean, std = inputs[run]
                x = convnet.to_tensor(images[idx], mean, std)
                view = augment(x, generator)
                if two_views:  # a second, independently augmented view of the same images
                    view = torch.cat([view, augment(x, generator)])
                xs.append(view)
                ys.append(targets[run][idx])
            x, y = torch.stack(xs).to(device), torch.stack(ys).to(device)
            lr = (learning_rate(step, total, loop.lr, loop.warmup_fraction) if loop.schedule == "warmup_cosine"
                  else cosine_rate(step, total, loop.lr))
            for group in optimiser.param_groups:
                group["lr"] = lr
            logits, features = batched_forward(params, buffers, x)
            if two_views:  # cross-entropy on the first view; SupCon on both views' projections
                logits, features = logits[:, : y.shape[1]], batched_project(head_params, features)
            losses = [combined_loss(logits[r], features[r] if with_features or two_views else None, y[r],
                                    loop.contrastive, loop.contrastive_weight) for r in range(len(seeds))]
            optimiser.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
            optimiser.step()
            if ema is not None:
                ema.step([params[n_] for n_ in names])
            step += 1
            bar.update(1)
            for r, loss in enumerate(losses):
                loss_sums[r] += loss.item() * y.shape[1]
                corrects[r] += int((logits[r].argmax(1) == y[r]).sum())
            seen += y.shape[1]
            if step % loop.eval_every == 0 or step == total:
                evaluated = ema.shadow_params if ema is not None else [params[n_] for n_ in names]
                _evaluate(loop, eval_models, names, evaluated, val_images, val_labels, histories, best_scores,
                          best_states, {"step": step, "epoch": epoch, "lr": lr},
                          [s_ / seen for s_ in loss_sums], [c / seen for c in corrects])
                loss_sums, corrects, seen = [0.0] * len(seeds), [0] * len(seeds), 0
                bar.set_postfix(loss=f"{np.mean([h[-1]['loss'] for h in histories]):.3f}",
                                val_acc=f"{np.mean([h[-1]['val_acc'] for h in histories]):.3f}")
            if step == total:
                break
    bar.close()
    out = []
    columns = [column for column, _ in loop.history]
    for model, state, history in zip(eval_models, best_states, histories):
        model.load_state_dict(state)  # the last step is always evaluated, so one exists
        rows = [{column: row[field] for column, field in loop.history} for row in history]
        out.append((model.eval(), pd.DataFrame(rows, columns=columns)))
    return out


def _evaluate(loop: Loop, eval_models, names, evaluated, val_images, val_labels, histories, best_scores,
              best_states, when: dict, losses: list[float], train_accs: list[float]) -> None:
    """Score each run's evaluated weights (EMA or trained) on val, append a history record,
    keep the best state."""
    for r, model in enumerate(eval_models):
        state = {name: weights[r].detach() for name, weights in zip(names, evaluated)}
        model.load_state_dict(state, strict=False)  # buffers (mean, std) are the run's already
        scores = val_scores(model, val_images, val_labels)
        histories[r].append({"step": when["step"], "epoch": when["epoch"], "loss": losses[r],
                             "train_acc": train_accs[r], "val_acc": scores["acc"], "val_auc": scores["auc"],
                             "val_macro_f1": scores["macro_f1"], "lr": when["lr"]})
        # Selection on val only, by AUC (accuracy when a class is missing from val and AUC is
        # undefined) or by accuracy; ties keep the earlier evaluation.
        if loop.select_by == "acc" or not np.isfinite(scores["auc"]):
            score = scores["acc"]
        else:
            score = scores["auc"]
        if score > best_scores[r]:
            best_scores[r], best_states[r] = score, copy.deepcopy(model.state_dict())


def val_scores(model: torch.nn.Module, val_images: np.ndarray, val_labels: np.ndarray) -> dict:
    """ACC, AUC and macro F1 of `model` on val: what each evaluation records and selects by."""
    return metrics.evaluate(val_labels, convnet.predict(model, val_images))


def evaluate_on_test(model: torch.nn.Module, test_images: np.ndarray, test_labels: np.ndarray) -> dict:
    """ACC, AUC and macro F1 of `model` on the test split: call once per trained model."""
    return metrics.evaluate(test_labels, convnet.predict(model, test_images))
