"""Speed of the ConvNet pooling's backward pass: four strided writes of a quarter of the
gradient (what the package does) against two strided writes and one contiguous copy (tried).

`convnet._HalvingMean.backward` hands each input pixel a quarter of its 2x2 cell's gradient.
Writing the four quarters as four stride-2 slices of the input-sized map touches every
cache line four times; writing the first row of each row pair as two stride-2 slices and
copying it onto the second as one contiguous block does the same copies with fewer strided
writes. Both give the same gradient, bit for bit (checked here before timing). This times,
alternating the two ways `--repeats` times each:

- the backward alone, 50 times, at the demo ConvNet's three map sizes (a batch of 90 images
  at width 16, one thread);
- a demo downstream ConvNet (the profile's recipe, `--steps` steps) on a random real IPC-10
  set, on one thread as notebook 05's workers train;
- the judge (notebook 03's ConvNet at width 128) for `--epochs` epochs, on the machine's threads.

    python bench/trials/pool_backward.py                # demo, 3 repeats; prints, writes
    python bench/trials/pool_backward.py --repeats 5

Writes bench/trials/results/pool_backward.csv (task, threads, backward, min/median/max
seconds, speed-up of the medians, the CPU).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_timing import alternate, demo_trainings, pool_alone, trial_arguments, write  # noqa: E402  (a sibling module)

from histodistill.classifiers import convnet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pool_backward.csv"
four_writes = convnet._HalvingMean.backward  # what the package does


def rows_then_copy(ctx, grad: torch.Tensor) -> torch.Tensor:
    """The backward tried: each output row pair as (h, 2, 2w), its first row filled by two
    strided writes, its second by one contiguous copy."""
    *lead, h, w = grad.shape
    quarter = grad * 0.25
    rows = grad.new_empty((*lead, h, 2, 2 * w))
    rows[..., 0, 0::2] = quarter
    rows[..., 0, 1::2] = quarter
    rows[..., 1, :] = rows[..., 0, :]
    full = rows.view(*lead, 2 * h, 2 * w)
    if tuple(ctx.in_shape[-2:]) == (2 * h, 2 * w):
        return full
    out = grad.new_zeros(ctx.in_shape)  # the dropped odd row or column gets no gradient
    out[..., : 2 * h, : 2 * w] = full
    return out


@contextmanager
def tried():
    convnet._HalvingMean.backward = staticmethod(rows_then_copy)
    try:
        yield
    finally:
        convnet._HalvingMean.backward = staticmethod(four_writes)


def same_gradients() -> None:
    """Both backwards give the same gradient, bit for bit, on even and odd sides."""
    for shape in ((90, 16, 28, 28), (4, 3, 7, 7), (2, 5, 6, 9)):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        upstream = torch.randn(*shape[:2], shape[2] // 2, shape[3] // 2)
        grads = []
        for way in (nullcontext, tried):
            with way():
                leaf = x.clone().requires_grad_()
                convnet.HalvingPool()(leaf).backward(upstream)
                grads.append(leaf.grad)
        assert torch.equal(*grads), shape


def main() -> None:
    args = trial_arguments(__doc__, steps=600)
    same_gradients()
    tasks = {(f"pooling fwd+bwd x50, {side}x{side} maps of 90x16", 1): pool_alone(side) for side in (28, 14, 7)}
    tasks.update(demo_trainings(args.profile, args.steps, args.epochs, ("convnet",)))
    write(alternate(tasks, {"four strided writes": nullcontext, "rows, then a copy": tried}, args.repeats,
                    "backward"), RESULTS)


if __name__ == "__main__":
    main()
