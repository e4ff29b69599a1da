"""How much training a row's runs together can gain on this machine, at best.

`training.train_runs` stacks R runs' weights and serves them with one `vmap`-ed forward and
backward pass, so that R small steps become one large one. That pays where a step is mostly
per-operation overhead (a GPU, or a CPU with cores to spare). This times, for each network
at the demo's width and batch (an IPC-10 set: 90 images of 28 px), one forward + backward
pass (cross-entropy, as a step computes it):

- `single`: one run on its own batch, as a run trained alone does;
- `stacked`: R runs under `vmap`, as `train_runs` does (per run: the time / R);
- `ideal`: one network on the R runs' batches concatenated (R x 90 images). It does the
  same arithmetic as R runs with no `vmap` and no grouped kernels: what any way of training
  the runs together could at best achieve (per run: the time / R).

`ceiling` = single / ideal per run: the most that stacking can speed up the forward and
backward passes here; the optimiser, the EMA and the val evaluations do not shrink with it.
On a CPU, a pass over R x 90 images is not cheaper per image than over 90: the activations
no longer fit in the cache, and element-wise kernels (group norm, ReLU, pooling) run slower
per element.

    python bench/stacking_ceiling.py              # 5 runs, both networks; prints, writes
    python bench/stacking_ceiling.py --runs 10 --repeats 50
    python bench/stacking_ceiling.py --device cuda   # on a GPU (scripts/gpu_check.sh)

Writes bench/results/stacking_ceiling.csv (stacking_ceiling-cuda.csv on a GPU): network,
width, runs, images per run, ms per run of each way, ceiling, stacked speed-up, threads, the
machine.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_speed import _sync  # noqa: E402  (a sibling script)

from histodistill import machine, presets  # noqa: E402
from histodistill.classifiers.networks import CONVNET_WIDTH, RESNET18_WIDTHS, build_network, scaled  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def median_ms(steps: dict, repeats: int, device: str) -> dict:
    """Median wall time in milliseconds of each of `steps` (name -> callable), after two
    warm-up calls each. The steps take turns, one call each per round, so a machine that
    slows down or speeds up during the benchmark affects them alike."""
    for step in steps.values():
        for _ in range(2):
            step()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(t) for name, t in times.items()}


def time_network(network: str, width_scale: float, runs: int, images: int, repeats: int, device: str) -> dict:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(runs, images, 3, 28, 28, generator=generator).to(device)
    y = torch.randint(0, 9, (runs, images), generator=generator).to(device)
    models = []
    for seed in range(runs):
        torch.manual_seed(seed)
        models.append(build_network(network, n_classes=9, image_size=28, width_scale=width_scale).to(device))
    one = models[0]

    def pass_of(inputs, labels):
        """One network's forward + backward on `inputs` (the single and the ideal way)."""
        def step():
            one.zero_grad(set_to_none=True)
            F.cross_entropy(one(inputs), labels).backward()
        return step

    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")  # the architecture; the weights come stacked

    def run_loss(p, b, xb, yb):
        return F.cross_entropy(functional_call(skeleton, (p, b), (xb,)), yb)

    stacked_loss = vmap(run_loss)

    def stacked():
        for value in params.values():
            value.grad = None
        stacked_loss(params, buffers, x, y).sum().backward()

    ways = {"single": pass_of(x[0], y[0]), "stacked": stacked, "ideal": pass_of(x.flatten(0, 1), y.flatten(0, 1))}
    ms = median_ms(ways, repeats, device)
    single_ms, stacked_ms, ideal_ms = ms["single"], ms["stacked"] / runs, ms["ideal"] / runs
    width = scaled(CONVNET_WIDTH if network == "convnet" else RESNET18_WIDTHS[0], width_scale)
    return {"network": network, "width": width, "runs": runs, "images_per_run": images,
            "single_ms": round(single_ms, 2), "stacked_ms_per_run": round(stacked_ms, 2),
            "ideal_ms_per_run": round(ideal_ms, 2), "ceiling": round(single_ms / ideal_ms, 2),
            "stacked_speedup": round(single_ms / stacked_ms, 2), "threads": torch.get_num_threads(),
            "device": machine.device_name(device), "cpu": machine.cpu_name(), "cores": os.cpu_count(),
            "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo", help="whose downstream width and IPC to time")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=30, help="rounds; each times every way once")
    ap.add_argument("--networks", nargs="+", default=["convnet", "resnet18"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    recipe = presets.stage_config("downstream", args.profile)
    images = 9 * presets.stage_config("selection", args.profile).ipc
    rows = []
    for network in args.networks:
        row = time_network(network, recipe.width_scale, args.runs, images, args.repeats, args.device)
        print(f"{network} (width {row['width']}), forward + backward of {images} images, ms per run: "
              f"alone {row['single_ms']}, {args.runs} stacked under vmap {row['stacked_ms_per_run']}, "
              f"{args.runs} as one batch {row['ideal_ms_per_run']}; ceiling {row['ceiling']}x, "
              f"vmap {row['stacked_speedup']}x", flush=True)
        rows.append(row)
    out = RESULTS / ("stacking_ceiling.csv" if args.device == "cpu" else f"stacking_ceiling-{args.device}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
