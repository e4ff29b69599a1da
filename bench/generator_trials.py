"""Generator trials: train the demo's denoiser with other settings and score it on the way.

Trains the U-ViT of a profile (demo by default) with field overrides, in chunks; after each
chunk it samples a small pool per guidance scale from the EMA weights and scores it as
notebook 03 does (`guidance.pool_scores`: class consistency, texture ratio, Fréchet distance
and its real-train floor, precision/recall, copies), all on real val / train, never test.
Each row (setting, step, scale, scores, minutes of training so far) is printed and appended
to bench/results/generator_trials.csv.

The run shares the diffusion stage's resumable work folder, so a trial trained to its last
step is the cached result of the same configuration trained from scratch (notebook 02 with
`use_shipped_generator = False`), which `python -m histodistill.generate.ship build` then packs.

A trial always trains (``shipped`` off). The committed trials (bench/results/generator_trials.csv)
came from the demo preset of that time with the fields that became the current preset:

    python bench/generator_trials.py --ae-set 'block_out_channels=(32,)' --ae-set edge_weight=1.0 \\
        --set patch_size=4 --set steps=16000 --set prediction_type=v_prediction --set snr_gamma=5.0 \\
        --set ema_decay=0.9995 --set lr=1e-3 --set warmup_steps=200 --set hidden_size=128 \\
        --eval-every 4000 --scales 1.5 2.5 4.0 --per-class 40
"""

from __future__ import annotations

import argparse
import ast
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from histodistill import cache, presets
from histodistill.data import dataset
from histodistill.generate import figures, guidance, stages
from histodistill.generate.diffusion import Trainer
from histodistill.generate.pipeline import ClassConditionalLDMPipeline
from histodistill.generate.config import SOLVERS
from histodistill.classifiers import judge

RESULTS = Path(__file__).parent / "results" / "generator_trials.csv"


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[name] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="demo")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="diffusion config override")
    ap.add_argument("--ae-set", action="append", default=[], metavar="FIELD=VALUE", help="autoencoder config override")
    ap.add_argument("--eval-every", type=int, default=0, help="steps between evaluations (0: only at the end)")
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0])
    ap.add_argument("--solvers", nargs="+", default=["dpmsolver++"], choices=SOLVERS,
                    help="sampler forms scored at each scale (rows before this option: dpmsolver++)")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--sampling-steps", type=int, default=20)
    ap.add_argument("--label", default="")
    args = ap.parse_args()

    torch.manual_seed(0)
    bundle = dataset.prepare_data(presets.stage_config("data", args.profile))
    classifier = judge.load_classifier(judge.fit_classifier(presets.stage_config("classifier", args.profile), bundle, progress=False))
    cfg = presets.stage_config("diffusion", args.profile, **{"shipped": False, **parse_overrides(args.set)})
    vae_artifact = None  # a denoiser in pixel space needs no autoencoder
    if cfg.space == "latent":
        ae_cfg = presets.stage_config("autoencoder", args.profile, **{"shipped": False, **parse_overrides(args.ae_set)})
        vae_artifact = stages.fit_autoencoder(ae_cfg, bundle, progress=False)
    inputs = stages.denoiser_inputs(cfg, vae_artifact, bundle)
    work, key = cache.work_dir("diffusion", cfg, inputs, stages.VERSIONS["diffusion"])
    latents, labels = stages.training_set(cfg, vae_artifact, bundle)
    trainer = Trainer(latents, labels, bundle.n_classes, cfg, work, key)
    vae = None if cfg.space == "pixel" else stages.load_autoencoder(vae_artifact)
    real_features = guidance.judge_features(classifier, bundle)
    setting = args.label or " ".join(["ae:" + a for a in args.ae_set] + args.set) or "preset"
    print(f"[trial] {setting}: key {key[:16]}, work folder {work}", flush=True)
    resumed_at, train_seconds = trainer.step, 0.0  # minutes count this process's training only
    chunk = args.eval_every or cfg.steps
    while trainer.step < cfg.steps:
        start = time.perf_counter()
        trainer.run(progress=False, max_steps=chunk)
        if trainer.step % cfg.checkpoint_every:
            trainer.save_checkpoint()
        train_seconds += time.perf_counter() - start
        evaluate(trainer, vae, cfg, bundle, classifier, real_features, args, setting, key, resumed_at, train_seconds)
    if resumed_at >= cfg.steps:  # trained to its end before: its final weights scored again (other scales, say)
        evaluate(trainer, vae, cfg, bundle, classifier, real_features, args, setting, key, resumed_at, train_seconds)


def evaluate(trainer, vae, cfg, bundle, classifier, real_features, args, setting, key, resumed_at, train_seconds) -> None:
    """Score a pool per solver and scale from the EMA weights: one row each in the results
    file, and the pool beside real train images in bench/results/generator_trial_<key>_<solver>_<scale>.png
    (the latest step's)."""
    pipe = ClassConditionalLDMPipeline.assemble(vae, trainer.ema_model().cpu(), cfg, bundle.class_names)
    loss = float(np.mean([h["loss"] for h in trainer.history[-200:]]))
    for solver in args.solvers:
        for scale in args.scales:
            t0 = time.perf_counter()
            pool_labels = np.repeat(np.arange(bundle.n_classes), args.per_class)
            images = pipe(pool_labels, args.sampling_steps, scale, seed=1, progress=False, solver=solver)
            scores = guidance.pool_scores(images, pool_labels, classifier, bundle, real_features)
            row = {"profile": args.profile, "setting": setting, "key": key[:16], "step": trainer.step,
                   "loss_last200": round(loss, 5), "guidance_scale": scale, "sampling_steps": args.sampling_steps,
                   **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items()},
                   "train_minutes": round(train_seconds / 60, 2), "resumed_at": resumed_at,
                   "eval_seconds": round(time.perf_counter() - t0, 1), "solver": solver}
            print(row, flush=True)
            append_row(row)
            train = bundle.splits["train"]
            fig = figures.real_vs_synthetic(train.images, train.labels, images, pool_labels, bundle.class_names,
                                            title=f"trial {key[:16]}, step {trainer.step}: {solver}, guidance {scale}")
            fig.savefig(RESULTS.parent / f"generator_trial_{key[:16]}_{solver}_{scale}.png", dpi=110, bbox_inches="tight")
            plt.close(fig)


def append_row(row: dict) -> None:
    """Add `row` to the results file; a column new to the file is added to every row (rows
    from before the solver column were all sampled with the ODE, dpmsolver++). A row scoring
    the same weights with the same sampler again (same key, step, solver, scale and steps)
    replaces the earlier one."""
    table = pd.read_csv(RESULTS) if RESULTS.exists() else pd.DataFrame()
    if len(table) and "solver" not in table:
        table["solver"] = "dpmsolver++"
    if len(table):
        same = np.ones(len(table), bool)
        for column in ("key", "step", "solver", "guidance_scale", "sampling_steps"):
            same &= (table[column] == row[column]).to_numpy()
        table = table[~same]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    pd.concat([table, pd.DataFrame([row])], ignore_index=True).to_csv(RESULTS, index=False)


if __name__ == "__main__":
    main()
