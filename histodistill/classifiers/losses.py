"""Downstream training losses: cross-entropy plus an optional contrastive term.

    >>> from histodistill.classifiers.losses import combined_loss
    >>> loss = combined_loss(logits, features, y, kind="supcon_1view", weight=0.1)

`logits` are always the network's raw scores. The released InfoDist code softmaxed them
and then applied cross-entropy (a second softmax) to the result; here cross-entropy sees
raw logits and the push-pull term applies softmax exactly once, internally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CONTRASTIVE as KINDS


class ProjectionHead(nn.Module):
    """SupCon's projection head (Khosla et al. 2020): a two-layer MLP from the network's
    feature to `out_dim` dimensions; the contrastive loss sees its (normalised) output and
    the classifier never does. Used in training only."""

    def __init__(self, in_dim: int, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def _check(scores: torch.Tensor, labels: torch.Tensor, what: str) -> None:
    if scores.ndim != 2 or labels.ndim != 1 or len(scores) != len(labels):
        raise ValueError(f"{what} must be (N, D) with labels (N,), not {tuple(scores.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ValueError(f"{what}: empty batch")


def supcon_loss(features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the "L_out" form) over a batch of
    embeddings: with two views, pass both (2N rows, labels repeated), so each image's other
    view is among its positives.

    Features are L2-normalised; for anchor i with positives P(i) (same label, not i):
        l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T) )
    and the loss is the mean of l_i over anchors that have at least one positive (the
    others carry no signal and are skipped). A batch without any positive pair gives a
    zero that still belongs to the graph. The paper's extra factor T / base_T is left out
    (it is 1 at their default T = base_T)."""
    _check(features, labels, "supcon features")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    z = F.normalize(features.float(), dim=1)
    sim = z @ z.T / temperature
    n = len(labels)
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    # log-softmax over every other sample; the diagonal is excluded with -inf
    log_prob = sim.masked_fill(self_mask, float("-inf")).log_softmax(dim=1)
    n_pos = positives.sum(1)
    has_pos = n_pos > 0
    if not has_pos.any():
        return features.sum() * 0.0
    # masked_fill before summing: -inf * 0 on the diagonal would give NaN
    pos_log_prob = log_prob.masked_fill(~positives, 0.0).sum(1)
    return -(pos_log_prob[has_pos] / n_pos[has_pos]).mean()


def semi_push_pull_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    beta: float = 0.9,
    margin: float = 0.3,
    boundary: float | None = None,
) -> torch.Tensor:
    """Boundary-guided semi-push-pull loss (BGAD, Yao et al. CVPR 2023) on class scores,
    as the released InfoDist code uses it, with the softmax applied exactly once.

    Our reading of the released code, for each class c present in the batch:
      * scores s = softmax(logits)[:, c] (probabilities, so boundaries and margin live
        in 0..1);
      * the class boundary b_c is the k-th largest score of the samples of class c,
        k = max(1, floor(beta * n_c)), computed on detached scores: about a fraction beta
        of class-c samples already score at or above it. With `boundary` given, b_c is
        that fixed value instead;
      * pull: class-c samples scoring at or below b_c are pulled up, mean of (b_c - s);
      * push: other samples whose class-c score is at or above b_c - margin are pushed
        down, mean of (s - (b_c - margin)); 0 when there is none.
    The loss is the sum over classes of pull + push. It is 0 when every sample's own-class
    score clears the boundary and every other score sits below boundary - margin (for
    instance, one-hot-like probabilities). "Semi": only scores on the wrong side of a
    boundary are moved; the rest are left alone."""
    _check(logits, labels, "push-pull logits")
    if not 0 < beta <= 1 or margin < 0:
        raise ValueError(f"need 0 < beta <= 1 and margin >= 0, not beta={beta}, margin={margin}")
    probs = logits.float().softmax(dim=1)  # the one and only softmax
    total = logits.sum() * 0.0  # keeps the graph (and the device) when no term applies
    for c in labels.unique().tolist():
        scores = probs[:, c]
        own = labels == c
        pos, neg = scores[own], scores[~own]
        if boundary is None:
            k = max(1, int(len(pos) * beta))
            b_c = pos.detach().topk(k).values[-1]
        else:
            b_c = torch.as_tensor(boundary, dtype=scores.dtype, device=scores.device)
        below = pos <= b_c
        if below.any():
            total = total + (b_c - pos[below]).mean()
        above = neg >= b_c - margin
        if above.any():
            total = total + (neg[above] - (b_c - margin)).mean()
    return total


def combined_loss(
    logits: torch.Tensor,
    features: torch.Tensor | None,
    labels: torch.Tensor,
    kind: str = "none",
    weight: float = 0.1,
    temperature: float = 0.1,
    beta: float = 0.9,
    margin: float = 0.3,
) -> torch.Tensor:
    """Cross-entropy on raw logits + weight x the chosen contrastive term.

    kind: "none" (cross-entropy only), "supcon" or "supcon_1view" (`supcon_loss` on
    `features`: for "supcon" the projected embeddings of both views, labels repeated, which
    the caller prepares, see `training.train`; for "supcon_1view" the network's
    features of the one view) or "push_pull" (`semi_push_pull_loss` on `logits`). The
    released code added its push-pull term with weight 1; 0.1 is this project's default."""
    if kind not in KINDS:
        raise ValueError(f"unknown contrastive kind {kind!r}; expected one of {KINDS}")
    ce = F.cross_entropy(logits, labels)
    if kind == "none" or weight == 0:
        return ce
    if kind in ("supcon", "supcon_1view"):
        if features is None:
            raise ValueError(f"kind={kind!r} needs the features")
        pairs = len(features) // len(labels)  # 2 for two views, labels repeated per view
        return ce + weight * supcon_loss(features, labels.repeat(pairs), temperature)
    return ce + weight * semi_push_pull_loss(logits, labels, beta, margin)
