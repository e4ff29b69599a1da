"""Speed of the classifiers with channels-last inputs (as `convnet.to_tensor` gave them before)
against contiguous ones (as it gives them now).

A permute of uint8 (N, H, W, C) images to (N, C, H, W) is a channels-last view. Convolutions
keep the layout of their input, so every layer of a network then ran channels-last, and on the
CPU group norm's channels-last kernel is several times slower than its contiguous one. This
times the same trainings both ways, alternating, each `--repeats` times:

- a demo downstream model (the profile's recipe, `--steps` steps) on a random real IPC-10 set,
  ConvNet and ResNet-18;
- the judge (notebook 03's ConvNet at width 128) for `--epochs` epochs on the train split.

    python bench/trials/input_layout.py                 # demo, 3 repeats; prints, writes
    python bench/trials/input_layout.py --repeats 5 --steps 300

Writes bench/trials/results/input_layout.csv (task, threads, layout, min/median/max seconds,
speed-up of the medians, the CPU). The downstream models train on one thread, as notebook
05's workers do; the judge on the machine's threads, as notebook 03 does.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_timing import alternate, demo_trainings, trial_arguments, write  # noqa: E402  (a sibling module)

from histodistill.classifiers import convnet  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "input_layout.csv"
contiguous_inputs = convnet.to_tensor  # what the package does now


def channels_last_inputs(images, mean, std) -> torch.Tensor:
    """The former `convnet.to_tensor`: the same values, laid out channels-last (the strides
    a permute of (N, H, W, C) gives)."""
    return contiguous_inputs(images, mean, std).contiguous(memory_format=torch.channels_last)


@contextmanager
def channels_last():
    convnet.to_tensor = channels_last_inputs
    try:
        yield
    finally:
        convnet.to_tensor = contiguous_inputs


def main() -> None:
    args = trial_arguments(__doc__, steps=200)
    tasks = demo_trainings(args.profile, args.steps, args.epochs, ("convnet", "resnet18"))
    write(alternate(tasks, {"channels_last": channels_last, "contiguous": nullcontext}, args.repeats, "layout"), RESULTS)


if __name__ == "__main__":
    main()
