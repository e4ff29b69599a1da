"""What the paper profile costs: each stage's cost per unit, measured here, times its units.

Every unit (an autoencoder step, a U-ViT step, one sampled image step, a judge epoch, a
downstream step, a DM iteration, ...) is run through the project's own code at the paper
profile's sizes (widths, batch sizes, 28 px, 89,996 train images), on random data of the
right shape (speed does not depend on the pixels). A unit's time is the difference between
runs of two lengths, so construction and warm-up drop out; its FLOPs are counted the same way
with torch's FlopCounterMode (matrix products, convolutions, attention; forward and backward).

The units of the paper profile follow from `presets.PRESETS["paper"]` (formulas in `units()`):
notebooks 01-05 and 07 form the pipeline, notebook 06's ablations are counted apart (opt-in
on a GPU box). Ablation variants that coincide with a main-table model are counted again, so
that row is an upper bound.

Predicted GPU hours: on a GPU (`--device cuda`, which `scripts/gpu_check.sh` runs) they are
the measured seconds per unit times the units. On a CPU they are FLOP estimates: the counted
FLOPs at an assumed sustained 30 TFLOP/s (about half an H100's 67 TFLOP/s fp32 peak; the
project trains in fp32), and never less than 1 ms per optimisation step (small 28-px models
are bound by kernel launches, not arithmetic). Both assumptions are written into the table.

    python bench/paper_time_model.py                 # CPU: bench/results/paper_rehearsal.csv
    python bench/paper_time_model.py --device cuda   # GPU: bench/results/paper_time_model-cuda.csv
    python bench/paper_time_model.py --only sampling --only dm   # some units only (names below)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ldm_speed import _sync  # noqa: E402  (a sibling script)

from histodistill import machine, presets  # noqa: E402
from histodistill.classifiers import convnet, training
from histodistill.classifiers.augmentation import DSA  # noqa: E402
from histodistill.classifiers.networks import build_network  # noqa: E402
from histodistill.data import rehearsal
from histodistill.evaluate import dm
from histodistill.generate import autoencoder, memorisation
from histodistill.generate.diffusion import Trainer, build_denoiser, build_noise_scheduler  # noqa: E402
from histodistill.generate.pipeline import ClassConditionalLDMPipeline, dpm_solver  # noqa: E402
from histodistill.privacy import generator_attack, measures
from histodistill.select import selection

RESULTS = Path(__file__).resolve().parent / "results"
ASSUMED_GPU_FLOPS = 30e12  # sustained FLOP/s assumed for a FLOP estimate (see the docstring)
STEP_FLOOR_S = 1e-3  # the least an optimisation step is assumed to take on a GPU
N_CLASSES = 9
TRAIN, VAL = (rehearsal.PATHMNIST_SPLITS[s] for s in ("train", "val"))


@dataclasses.dataclass
class Unit:
    """One unit of work: `run(n)` does n of it through the project's code."""

    stage: str  # the notebook and what it does
    name: str  # short name for --only
    unit: str  # what one unit is
    run: Callable[[int], None]
    lengths: tuple[int, int]  # the two run lengths whose difference is timed
    step: bool  # an optimisation step (the GPU floor applies)
    units_per_count: float = 1.0  # units of work one count of `run` does (run(1) encodes 256 images: 256)
    host: bool = False  # runs on the host CPU (numpy, scikit-learn, Infomap) even on a GPU box
    same_as: str = ""  # costs what that unit costs (measured once)


def paper() -> dict:
    return {stage: presets.stage_config(stage, "paper") for stage in presets.STAGES}


def units(cfg: dict) -> dict[str, tuple[float, str]]:
    """Units of each kind in the paper profile, with the formula that gives them."""
    ds, ev, ab, pr = cfg["downstream"], cfg["evaluation"], cfg["ablation"], cfg["privacy"]
    sweep = len(cfg["guidance_sweep"].scales) * len(cfg["guidance_sweep"].solvers) * cfg["guidance_sweep"].per_class * N_CLASSES
    pool = cfg["sampling"].per_class * N_CLASSES
    main_rows = 7  # full real, random real, random synthetic, k-means, InfoDist (CE), CE + contrastive, DM
    seeds, nets = ev.seeds, len(ev.networks)
    budget_extra = sum(b for b in ev.budget_steps if b != ds.steps) * ev.budget_seeds  # the chosen budget's runs are the main table's
    ablation_variants = (len(ab.contrastive_kinds) * len(ab.contrastive_weights) + len(ab.methods) + len(ab.ipcs)
                         + len(ab.pool_sizes) + len(ab.guidance_scales) + 2)  # + the privacy filter off and on
    guidance_pools = len(ab.guidance_scales) * ab.guidance_per_class * N_CLASSES
    evals = ds.steps // ds.eval_every + 1
    members = min(pr.max_members, TRAIN)  # train images the membership attacks score
    audited = 4  # classifiers the audit trains itself: on the distilled set, DM's, random real and unseen real
    control = pr.control_per_class * N_CLASSES
    return {
        "ae_step": (cfg["autoencoder"].steps, "autoencoder steps"),
        "encode": (TRAIN + members + control + VAL,
                   f"train images encoded once; the audit's generator attack encodes {members} members, "
                   f"{control} control images and val again"),
        "uvit_step": (cfg["diffusion"].steps, "U-ViT steps"),
        "judge_epoch": (cfg["classifier"].epochs, "classifier epochs"),
        "sample": ((pool + sweep) * cfg["sampling"].steps,
                   f"(pool {pool} + sweep {sweep} images) x {cfg['sampling'].steps} steps"),
        "embed": (pool + VAL + TRAIN, "pool, val and train images through the judge"),
        "select": (N_CLASSES * 3, "classes x (InfoDist, k-means, random) at the pool's size"),
        "convnet_step": (seeds * main_rows * ds.steps + budget_extra + (pr.reference_models + audited) * ds.steps,
                         f"{seeds} runs x {main_rows} rows x {ds.steps} steps + budget check {budget_extra} + "
                         f"({pr.reference_models} audit reference models + {audited} audited classifiers) x {ds.steps}"),
        "resnet_step": (seeds * main_rows * ds.steps + budget_extra,
                        f"{seeds} runs x {main_rows} rows x {ds.steps} steps + budget check {budget_extra}"),
        "val_pass": (nets * (seeds * main_rows * evals + ev.budget_seeds * len(ev.budget_steps) * evals),
                     f"models x {evals} val evaluations of {VAL} images (per network, ConvNet's cost)"),
        "dm_iteration": (seeds * cfg["dm"].iterations, f"{seeds} runs x {cfg['dm'].iterations} iterations"),
        "audit_nn": (7, "sets audited against train + val, the two negative controls included (pixels; features "
                        "cost less)"),
        "audit_predict": ((pr.reference_models + audited) * (members + VAL) / VAL,
                          f"({pr.reference_models} reference + {audited} audited classifiers) x ({members} members + "
                          f"{VAL} val) images, in passes over val"),
        "generator_attack": ((members + VAL + control + VAL) * len(pr.timesteps) * pr.draws,
                             f"({members} members + {VAL} val, and the control's {control} + {VAL}) x "
                             f"{len(pr.timesteps)} timesteps x {pr.draws} draws (the control's smaller "
                             f"denoiser counted at the run's width: an upper bound)"),
        "ablation_step": (ab.seeds * ablation_variants * ds.steps,
                          f"{ab.seeds} runs x {ablation_variants} variants x {ds.steps} ConvNet steps (upper bound)"),
        "ablation_sample": (guidance_pools * cfg["sampling"].steps,
                            f"guidance pools {guidance_pools} images x {cfg['sampling'].steps} steps"),
    }


def build_units(cfg: dict, device: str) -> list[Unit]:
    rng = np.random.default_rng(0)
    size = cfg["data"].size

    def images(n: int) -> np.ndarray:
        return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)

    def labels(n: int) -> np.ndarray:
        return np.arange(n) % N_CLASSES

    ae_cfg, dm_cfg, s_cfg, ds = cfg["autoencoder"], cfg["diffusion"], cfg["sampling"], cfg["downstream"]
    ae_images = images(ae_cfg.batch_size)
    vae = autoencoder.build_autoencoder(ae_cfg, size).to(device)
    side = size // 2 ** (len(ae_cfg.block_out_channels) - 1)
    latent_shape = (ae_cfg.latent_channels, side, side)
    uvit = build_denoiser(dm_cfg, latent_shape, N_CLASSES).to(device).eval()
    pipe = ClassConditionalLDMPipeline(vae=vae.eval(), transformer=uvit, scheduler=dpm_solver(build_noise_scheduler(dm_cfg)))
    sample_batch = min(s_cfg.batch_size, 64)  # per-image cost; a smaller batch keeps the CPU run short
    judge_images, judge_val = images(2048), images(256)
    set_images = images(cfg["selection"].ipc * N_CLASSES)
    val_images = images(1024)
    work = tempfile.TemporaryDirectory()
    trainer = Trainer(torch.randn(dm_cfg.batch_size, *latent_shape), labels(dm_cfg.batch_size), N_CLASSES,
                      dataclasses.replace(dm_cfg, checkpoint_every=10**9), Path(work.name), "bench", device)
    features = rng.normal(size=(cfg["sampling"].per_class, 2048)).astype(np.float32)  # one class of the pool
    dm_real = images(cfg["dm"].batch_real * N_CLASSES)
    audit_train, audit_val = images(TRAIN), images(VAL)

    def uvit_steps(n: int) -> None:
        trainer.run(progress=False, max_steps=n)

    def sample(n: int) -> None:  # n sampler steps for a batch; the unit is one image-step
        pipe(labels(sample_batch), n, s_cfg.guidance_scale, batch_size=sample_batch, progress=False, solver=s_cfg.solver)

    def judge(n: int) -> None:  # n passes over 2048 images; scaled to epochs over train below
        training.train_judge(judge_images, labels(2048), judge_val, labels(256), N_CLASSES,
                             dataclasses.replace(cfg["classifier"], epochs=n), progress=False, device=device)

    def downstream_steps(network: str) -> Callable[[int], None]:
        def run(n: int) -> None:
            recipe = dataclasses.replace(ds, network=network, steps=n, eval_every=10**6)
            training.train_on_set(set_images, labels(len(set_images)), val_images[:64], labels(64), N_CLASSES,
                                    recipe, progress=False, device=device)
        return run

    val_model = build_network("convnet", N_CLASSES, size).to(device).eval()
    attack_latents = torch.randn(256, *latent_shape)
    noise = build_noise_scheduler(dm_cfg)

    def denoiser_passes(n: int) -> None:  # n x 256 latents, one timestep and draw each
        for _ in range(n):
            generator_attack.denoising_losses(uvit, noise, attack_latents, labels(256), (50,), 1, 0)

    def val_pass(n: int) -> None:  # n passes over 1024 images; scaled to val's size below
        for _ in range(n):
            convnet.predict(val_model, val_images)

    return [
        Unit("02 autoencoder training", "ae_step", f"step (batch {ae_cfg.batch_size})",
             lambda n: autoencoder.train_autoencoder(ae_images, dataclasses.replace(ae_cfg, steps=n), progress=False,
                                                     device=device), (1, 3), True),
        Unit("02 encode the train split", "encode", "image",
             lambda n: autoencoder.encode(vae, images(256 * n)), (1, 5), False, units_per_count=256),
        Unit("02 U-ViT training", "uvit_step", f"step (batch {dm_cfg.batch_size})", uvit_steps, (1, 3), True),
        Unit("03 judge classifier", "judge_epoch", f"epoch ({TRAIN} images)", judge, (1, 2), True,
             units_per_count=2048 / TRAIN),
        Unit("03 sampling (pool and sweep)", "sample", f"image step ({s_cfg.solver}, guidance {s_cfg.guidance_scale})",
             sample, (1, 3), False, units_per_count=sample_batch),
        Unit("04 embedding", "embed", "image", lambda n: convnet.embed(val_model, images(1024 * n)), (1, 3), False,
             units_per_count=1024),
        Unit("04 selection", "select", f"class of {cfg['sampling'].per_class} images",
             lambda n: [selection.select_infodist(features, np.zeros(len(features), int), cfg["selection"].ipc)
                        for _ in range(n)], (1, 2), False, host=True),
        Unit("05 downstream ConvNet", "convnet_step", f"step (batch {ds.batch_size})", downstream_steps("convnet"), (2, 6), True),
        Unit("05 downstream ResNet-18", "resnet_step", f"step (batch {ds.batch_size})", downstream_steps("resnet18"), (2, 4), True),
        Unit("05 val evaluations", "val_pass", f"pass over val ({VAL} images)", val_pass, (1, 3), False,
             units_per_count=1024 / VAL),
        Unit("05 Distribution Matching", "dm_iteration", "iteration",
             lambda n: dm.distribution_matching(dm_real, labels(len(dm_real)), N_CLASSES, cfg["selection"].ipc, n,
                                                batch_real=cfg["dm"].batch_real, embed_width=cfg["dm"].embed_width,
                                                dsa=DSA(shared=True).augment if cfg["dm"].dsa else None, device=device),
             (1, 3), True),
        Unit("07 audit nearest neighbours", "audit_nn", f"set of {len(set_images)} images vs train + val",
             lambda n: [measures.dcr_share(memorisation.pixel_vectors(set_images), memorisation.pixel_vectors(audit_train),
                                          memorisation.pixel_vectors(audit_val)) for _ in range(n)], (0, 1), False, host=True),
        Unit("07 audit: classifier predictions", "audit_predict", f"pass over val ({VAL} images)", val_pass, (1, 3),
             False, units_per_count=1024 / VAL, same_as="val_pass"),
        Unit("07 audit: generator membership attack", "generator_attack", "denoiser pass (one latent, no guidance)",
             denoiser_passes, (1, 3), False, units_per_count=256),
        Unit("06 ablations: downstream", "ablation_step", f"ConvNet step (batch {ds.batch_size})",
             downstream_steps("convnet"), (2, 6), True, same_as="convnet_step"),
        Unit("06 ablations: guidance pools", "ablation_sample", "image step", sample, (1, 3), False,
             units_per_count=sample_batch, same_as="sample"),
    ]


def measure(unit: Unit, device: str) -> tuple[float, float, float]:
    """Seconds and FLOPs of one unit of `unit`, and the peak GPU memory (MiB) of its runs
    (NaN on a CPU)."""
    lo, hi = unit.lengths
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    seconds, flops = [], []
    for n in (lo, hi):
        _sync(device)
        start = time.perf_counter()
        unit.run(n)
        _sync(device)
        seconds.append(time.perf_counter() - start)
        counter = FlopCounterMode(display=False)
        with counter:
            unit.run(n)
        flops.append(counter.get_total_flops())
    scale = 1 / ((hi - lo) * unit.units_per_count)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else float("nan")
    return max(seconds[1] - seconds[0], 0.0) * scale, max(flops[1] - flops[0], 0) * scale, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", action="append", help="unit name(s) to measure (default: all)")
    args = parser.parse_args()
    machine.configure_torch()
    cfg = paper()
    counts = units(cfg)
    on_gpu = args.device.startswith("cuda")
    rows, measured = [], {}
    for unit in build_units(cfg, args.device):
        if args.only and unit.name not in args.only and unit.same_as not in args.only:
            continue
        if unit.same_as in measured:
            seconds, flops, peak = measured[unit.same_as]
        else:
            seconds, flops, peak = measured[unit.name] = measure(unit, args.device)
        n, formula = counts[unit.name]
        if unit.host:
            gpu_s, how = seconds, "runs on the host CPU: this machine's seconds"
        elif on_gpu:
            gpu_s, how = seconds, f"measured on {machine.device_name(args.device)}"
        else:
            gpu_s = max(flops / ASSUMED_GPU_FLOPS, STEP_FLOOR_S if unit.step else 0.0)
            how = (f"FLOP estimate: {flops / 1e9:.3g} GFLOP per unit at an assumed {ASSUMED_GPU_FLOPS / 1e12:.0f} TFLOP/s"
                   + (f", at least {STEP_FLOOR_S * 1e3:.0f} ms per step" if unit.step else ""))
        rows.append({"stage": unit.stage, "unit": unit.unit, "units_in_paper_profile": n, "how_many": formula,
                     f"seconds_per_unit_{'gpu' if on_gpu else 'cpu'}": seconds, "gflop_per_unit": flops / 1e9,
                     "peak_gpu_mib": peak,
                     "predicted_gpu_hours": n * gpu_s / 3600, "how_predicted": how})
        print(f"{unit.stage:34s} {seconds:10.4g} s/unit  x {n:>10.6g}  -> {n * gpu_s / 3600:8.3f} GPU h", flush=True)
    table = pd.DataFrame(rows)
    pipeline = table[~table["stage"].str.startswith("06")]["predicted_gpu_hours"].sum()
    ablations = table[table["stage"].str.startswith("06")]["predicted_gpu_hours"].sum()
    print(f"predicted on one GPU: notebooks 01-05 and 07 {pipeline:.2f} h; ablations (06) {ablations:.2f} h")
    table["device"] = machine.device_name(args.device)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("paper_time_model-cuda.csv" if on_gpu else "paper_rehearsal.csv")
    if args.only and out.exists():  # measure some units again: keep the other rows
        old = pd.read_csv(out)
        table = pd.concat([old[~old["stage"].isin(table["stage"])], table]).reset_index(drop=True)
    table.to_csv(out, index=False)
    out.with_suffix(".md").write_text(markdown(table, on_gpu))
    print(f"written to {out} and {out.with_suffix('.md').name}")


def markdown(table: pd.DataFrame, on_gpu: bool) -> str:
    """The README's table "what the paper profile costs", from the CSV's rows."""
    seconds = "seconds_per_unit_gpu" if on_gpu else "seconds_per_unit_cpu"
    lines = ["| stage | unit | units in `paper` | seconds per unit here | GFLOP per unit | predicted GPU hours |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in table.itertuples():
        lines.append(f"| {row.stage} | {row.unit} | {row.units_in_paper_profile:,.0f} | {getattr(row, seconds):.3g} | "
                     f"{row.gflop_per_unit:.3g} | {row.predicted_gpu_hours:.2f} |")
    pipeline = table[~table["stage"].str.startswith("06")]["predicted_gpu_hours"].sum()
    ablations = table[table["stage"].str.startswith("06")]["predicted_gpu_hours"].sum()
    lines.append(f"| **notebooks 01-05 and 07** | | | | | **{pipeline:.1f}** |")
    lines.append(f"| **ablations (06)** | | | | | **{ablations:.1f}** |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
