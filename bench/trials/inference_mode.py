"""`torch.no_grad` or `torch.inference_mode` around the demo's inference on a CPU: sampling
a sweep pool (40 images per class, the demo sampler, on the machine's threads as notebook 03
samples) and the judge's class probabilities for 1800 images (as 03 scores a pool). Both
contexts run the same code; the trial checks that they give the same bytes and times them
alternating, `--repeats` times each.

    python bench/trials/inference_mode.py            # writes results/inference_mode.csv

Run it alone on a quiet machine (the demo's shipped generator; the judge trains once, cached).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from histodistill import machine, presets
from histodistill.classifiers import convnet, judge
from histodistill.data import dataset
from histodistill.generate import pipeline, stages

RESULTS = Path(__file__).resolve().parent / "results"
CONTEXTS = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    threads = machine.configure_torch()
    bundle = dataset.prepare_data(presets.stage_config("data", "demo"))
    vae = stages.fit_autoencoder(presets.stage_config("autoencoder", "demo"), bundle, progress=False)
    ldm = stages.fit_diffusion(presets.stage_config("diffusion", "demo"), vae, bundle, progress=False)
    pipe = stages.load_pipeline(ldm)
    cfg = presets.stage_config("sampling", "demo")
    labels = np.repeat(np.arange(bundle.n_classes), 40)
    classifier = judge.load_classifier(judge.fit_classifier(presets.stage_config("classifier", "demo"), bundle))
    images = np.concatenate([bundle.splits["train"].images] * 3)  # 1800, a demo pool's size

    # Each task's body without its own no_grad, so that only the context around it differs.
    sample = pipeline.ClassConditionalLDMPipeline.__call__.__wrapped__
    outputs = convnet._outputs.__wrapped__
    tasks = {
        "sampling a sweep pool (360 images)": lambda: sample(pipe, labels, cfg.steps, cfg.guidance_scale, cfg.seed,
                                                            cfg.batch_size, False, cfg.solver),
        "the judge's probabilities (1800 images)": lambda: outputs(classifier, images, 512, "probs"),
    }
    rows = []
    for task, run in tasks.items():
        seconds, results = {name: [] for name in CONTEXTS}, {}
        for _ in range(args.repeats):
            for name, context in CONTEXTS.items():
                start = time.perf_counter()
                with context():
                    results[name] = run()
                seconds[name].append(time.perf_counter() - start)
        before, after = statistics.median(seconds["no_grad"]), statistics.median(seconds["inference_mode"])
        rows.append({"task": task, "threads": threads, "no_grad_s": round(before, 3),
                     "inference_mode_s": round(after, 3), "speed_up": round(before / after, 3),
                     "same_bytes": bool(np.array_equal(results["no_grad"], results["inference_mode"])),
                     "repeats": args.repeats, "cpu": machine.cpu_name()})
        print(rows[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(RESULTS / "inference_mode.csv", index=False)
    print(f"written to {RESULTS / 'inference_mode.csv'}")


if __name__ == "__main__":
    main()
