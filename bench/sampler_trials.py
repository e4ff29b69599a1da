"""Sampler trials: score a profile's trained generator under other sampler settings.

Samples a small pool per (solver, guidance scale, guidance interval) from the profile's
generator (the shipped one for the demo, else trained or read from the cache) and scores it
as notebook 03's sweep does (`guidance.pool_scores`: class consistency, texture ratio,
Fréchet distance with its real-train floor, precision/recall, copies), on real val and
train only, never test. One row per setting, printed and appended to
bench/results/sampler_trials.csv with the seconds it took to sample and score.

    python bench/sampler_trials.py --solvers sde-dpmsolver++ --scales 2 3 4 \\
        --intervals none 0.3,5 --per-class 40

An interval "lo,hi" guides only the steps whose sigma lies in (lo, hi]; "none" guides all.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from histodistill import machine, presets
from histodistill.data import dataset
from histodistill.generate import guidance, stages
from histodistill.generate.config import SOLVERS
from histodistill.classifiers.judge import fit_classifier, load_classifier

RESULTS = Path(__file__).resolve().parent / "results" / "sampler_trials.csv"


def parse_interval(text: str) -> tuple[float, float] | None:
    if text == "none":
        return None
    lo, hi = (float(v) for v in text.split(","))
    return (lo, hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--solvers", nargs="+", default=["sde-dpmsolver++"], choices=SOLVERS)
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0])
    ap.add_argument("--intervals", nargs="+", default=["none"], help='"none" or "lo,hi" (sigma bounds)')
    ap.add_argument("--per-class", type=int, default=40)
    ap.add_argument("--steps", type=int, default=20, help="sampling steps")
    ap.add_argument("--seed", type=int, default=1, help="the sweep's seed (the main pool uses another)")
    args = ap.parse_args()
    machine.configure_torch()

    bundle = dataset.prepare_data(presets.stage_config("data", args.profile))
    vae = stages.fit_autoencoder(presets.stage_config("autoencoder", args.profile), bundle)
    ldm = stages.fit_diffusion(presets.stage_config("diffusion", args.profile), vae, bundle)
    judge = load_classifier(fit_classifier(presets.stage_config("classifier", args.profile), bundle))
    real_features = guidance.judge_features(judge, bundle)
    pipe = stages.load_pipeline(ldm)
    labels = np.repeat(np.arange(len(pipe.class_names)), args.per_class)
    for solver in args.solvers:
        for interval_text in args.intervals:
            interval = parse_interval(interval_text)
            for scale in args.scales:
                started = time.perf_counter()
                images = pipe(labels, args.steps, scale, seed=args.seed, progress=False, solver=solver,
                              guidance_interval=interval)
                scores = guidance.pool_scores(images, labels, judge, bundle, real_features)
                row = {"profile": args.profile, "diffusion_key": ldm.key[:16], "solver": solver,
                       "guidance_scale": scale, "guidance_interval": interval_text, "sampling_steps": args.steps,
                       "seed": args.seed, **scores, "seconds": round(time.perf_counter() - started, 1)}
                print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
                append_row(row)


def append_row(row: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    table = pd.read_csv(RESULTS) if RESULTS.exists() else pd.DataFrame()
    pd.concat([table, pd.DataFrame([row])], ignore_index=True).to_csv(RESULTS, index=False)


if __name__ == "__main__":
    main()
