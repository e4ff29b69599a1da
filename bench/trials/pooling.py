"""Speed of the ConvNet's 2x2 average pooling as torch's `avg_pool2d` (what the ConvNet used
before) against `convnet.HalvingPool` (four strided slices, what it uses now on the CPU).

Torch's CPU `avg_pool2d` kernel is slow on contiguous (N, C, H, W) maps: in a profile of one
demo downstream model its forward and backward were over a quarter of the training time. This
times, alternating the two ways `--repeats` times each:

- the pooling alone, forward and backward, at the demo ConvNet's three map sizes (a batch of
  90 images at width 16, one thread);
- a demo downstream ConvNet (the profile's recipe, `--steps` steps) on a random real IPC-10
  set, on one thread as notebook 05's workers train;
- the judge (notebook 03's ConvNet at width 128) for `--epochs` epochs, on the machine's threads.

    python bench/trials/pooling.py                  # demo, 3 repeats; prints, writes
    python bench/trials/pooling.py --repeats 5 --steps 300

Writes bench/trials/results/pooling.csv (task, threads, pooling, min/median/max seconds, speed-up
of the medians, the CPU).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_timing import alternate, demo_trainings, pool_alone, trial_arguments, write  # noqa: E402  (a sibling module)

from histodistill.classifiers import convnet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pooling.csv"
slices_forward = convnet.HalvingPool.forward  # what the package does now


@contextmanager
def torch_avg_pool():
    convnet.HalvingPool.forward = lambda self, x: F.avg_pool2d(x, 2, 2)
    try:
        yield
    finally:
        convnet.HalvingPool.forward = slices_forward


def main() -> None:
    args = trial_arguments(__doc__, steps=200)
    tasks = {(f"pooling fwd+bwd x50, {side}x{side} maps of 90x16", 1): pool_alone(side) for side in (28, 14, 7)}
    tasks.update(demo_trainings(args.profile, args.steps, args.epochs, ("convnet",)))
    write(alternate(tasks, {"avg_pool2d": torch_avg_pool, "slices": nullcontext}, args.repeats, "pooling"), RESULTS)


if __name__ == "__main__":
    main()
