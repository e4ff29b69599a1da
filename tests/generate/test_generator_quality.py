"""What makes the generator good and keeps it honest: the sampler's first timestep, v-prediction
and min-SNR weighting, the autoencoder's texture loss, the texture measures, choosing the
guidance scale on val, and the shipped generator with its identity check."""

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.ndimage
import torch
from conftest import balanced_labels, make_images

from histodistill import presets
from histodistill.data import dataset
from histodistill.generate import autoencoder, guidance, quality, ship, shipped, stages
from histodistill.generate.diffusion import Trainer, build_noise_scheduler, loss_weights
from histodistill.generate.sampling import TIMESTEP_SPACING, denoise, dpm_solver, guidance_scales, noise_levels
from histodistill.generate.config import AutoencoderConfig, DiffusionConfig, GuidanceSweepConfig, SamplingConfig

# --- the sampler ---------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 5, 20, 25, 50, 1000])
@pytest.mark.parametrize("schedule", ["scaled_linear", "linear"])
def test_sampling_starts_at_the_last_training_timestep(steps, schedule):
    """Sampling from pure noise must begin where training saw pure noise: t = T - 1."""
    cfg = DiffusionConfig(beta_schedule=schedule)
    solver = dpm_solver(build_noise_scheduler(cfg))
    solver.set_timesteps(steps)
    assert solver.config.timestep_spacing == TIMESTEP_SPACING == "trailing"
    assert int(solver.timesteps[0]) == cfg.num_train_timesteps - 1
    assert len(solver.timesteps) == steps
    assert np.all(np.diff(solver.timesteps.numpy()) < 0)


def test_the_saved_pipeline_keeps_the_trailing_spacing(tmp_path):
    from histodistill.generate.pipeline import ClassConditionalLDMPipeline
    from histodistill.generate.uvit import UViT

    vae = autoencoder.build_autoencoder(AutoencoderConfig(block_out_channels=(8, 16)), 28)
    model = UViT(sample_size=14, in_channels=4, patch_size=2, hidden_size=16, depth=1, num_heads=2, num_classes=2)
    pipe = ClassConditionalLDMPipeline(vae, model, dpm_solver(build_noise_scheduler(DiffusionConfig())), ["a", "b"])
    pipe.save_pretrained(tmp_path / "p")
    loaded = ClassConditionalLDMPipeline.from_pretrained(tmp_path / "p", low_cpu_mem_usage=False)
    assert loaded.scheduler.config.timestep_spacing == "trailing"


def test_guidance_interval_guides_only_the_steps_inside_it():
    """sigma = sqrt((1 - alpha_bar) / alpha_bar) per step; guidance where lo < sigma <= hi."""
    solver = dpm_solver(build_noise_scheduler(DiffusionConfig()))
    solver.set_timesteps(20)
    sigmas = noise_levels(solver, solver.timesteps).numpy()
    alpha_bar = solver.alphas_cumprod[solver.timesteps].double().numpy()
    np.testing.assert_allclose(sigmas, np.sqrt((1 - alpha_bar) / alpha_bar))
    assert np.all(np.diff(sigmas) < 0)  # noise falls along the run
    scales = guidance_scales(solver, solver.timesteps, 3.0, (0.5, 5.0))
    assert scales == [3.0 if 0.5 < s <= 5.0 else 1.0 for s in sigmas]
    assert scales[0] == 1.0 and scales[-1] == 1.0 and 3.0 in scales  # off at both ends here
    assert guidance_scales(solver, solver.timesteps, 3.0, None) == [3.0] * 20


def test_an_interval_holding_every_step_changes_nothing_and_an_empty_one_means_no_guidance():
    from histodistill.generate.uvit import UViT

    torch.manual_seed(0)
    model = UViT(sample_size=4, in_channels=2, patch_size=2, hidden_size=16, depth=1, num_heads=2, num_classes=2)
    sched = build_noise_scheduler(DiffusionConfig())
    labels = np.array([0, 1, 1])

    def run(scale, interval):
        return denoise(model, sched, labels, 4, scale, torch.Generator().manual_seed(0), progress=False,
                       guidance_interval=interval)

    assert torch.equal(run(3.0, None), run(3.0, (0.0, 1e6)))
    assert torch.equal(run(3.0, (1e5, 1e6)), run(1.0, None))
    assert not torch.equal(run(3.0, None), run(1.0, None))


def test_guidance_interval_is_checked():
    assert SamplingConfig(guidance_interval=(0.3, 5.0)).guidance_interval == (0.3, 5.0)
    for bad in [(5.0, 0.3), (-1.0, 2.0), (1.0, 1.0)]:
        with pytest.raises(ValueError, match="guidance_interval"):
            SamplingConfig(guidance_interval=bad)


# --- training objective ----------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_min_snr_weights_follow_the_formula(prediction):
    sched = build_noise_scheduler(DiffusionConfig(prediction_type=prediction))
    t = torch.tensor([0, 10, 100, 500, 999])
    a = sched.alphas_cumprod[t]
    snr = a / (1 - a)
    expected = torch.clamp(snr, max=5.0) / (snr + 1 if prediction == "v_prediction" else snr)
    torch.testing.assert_close(loss_weights(sched, t, 5.0), expected.float(), rtol=1e-5, atol=0)
    assert loss_weights(sched, t, None) is None
    # Noisy timesteps (SNR below gamma) keep full weight on the epsilon objective.
    if prediction == "epsilon":
        assert float(loss_weights(sched, torch.tensor([999]), 5.0)) == pytest.approx(1.0)


def test_v_prediction_trains_towards_the_velocity(tmp_path):
    cfg = DiffusionConfig(hidden_size=16, depth=1, num_heads=2, steps=3, batch_size=8, warmup_steps=1,
                                 prediction_type="v_prediction", snr_gamma=5.0, checkpoint_every=100)
    latents = torch.randn(16, 4, 8, 8)
    trainer = Trainer(latents, balanced_labels(16, 2), 2, cfg, tmp_path / "w", "k")
    assert trainer.noise.config.prediction_type == "v_prediction"
    losses = [trainer.train_step() for _ in range(3)]
    assert all(np.isfinite(losses))
    assert list(trainer.history_frame().columns) == ["step", "loss", "lr", "seconds"]
    assert trainer.history[-1]["seconds"] >= trainer.history[0]["seconds"] > 0


def test_unknown_prediction_type_and_bad_gamma_are_refused():
    with pytest.raises(ValueError, match="prediction_type"):
        DiffusionConfig(prediction_type="sample")
    with pytest.raises(ValueError, match="snr_gamma"):
        DiffusionConfig(snr_gamma=0.0)


# --- the autoencoder's texture loss --------------------------------------------------------


def test_laplacian_equals_scipys_with_mirrored_edges():
    x = torch.randn(2, 3, 9, 11)
    ours = autoencoder.laplacian(x).numpy()
    ref = np.stack([np.stack([scipy.ndimage.laplace(c, mode="mirror") for c in img]) for img in x.numpy()])
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_edge_loss_is_logged_and_off_by_default():
    images = make_images(8)
    cfg = AutoencoderConfig(block_out_channels=(8, 16), steps=3, batch_size=4)
    _, off = autoencoder.train_autoencoder(images, cfg, progress=False)
    _, on = autoencoder.train_autoencoder(images, dataclasses.replace(cfg, edge_weight=1.0), progress=False)
    assert (off["edge"] == 0).all() and (on["edge"] > 0).all()
    # The first step's reconstruction is the same (same seed); only the loss differs.
    assert on["l1"].iloc[0] == pytest.approx(off["l1"].iloc[0])


# --- texture measures --------------------------------------------------------------------------


def test_texture_energy_of_flat_and_checkerboard_images():
    flat = np.full((2, 8, 8, 3), 128, np.uint8)
    assert quality.texture_energy(flat).tolist() == [0.0, 0.0]
    board = ((np.indices((8, 8)).sum(0) % 2) * 255).astype(np.uint8)
    board = np.repeat(board[None, :, :, None], 3, axis=3)
    # Every pixel differs from its 4 neighbours by 1 (on a 0..1 scale): |Laplacian| = 4,
    # and mirrored edges keep that at the border too.
    assert quality.texture_energy(board)[0] == pytest.approx(4.0, rel=1e-5)
    assert quality.pixel_std(board)[0] == pytest.approx(0.5)


def test_texture_table_ratios_per_class():
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    labels = balanced_labels(20, 2)
    flat = np.full_like(real, 100)
    table = quality.texture_table(real, labels, real, labels, ["a", "b"])
    assert table["class"].tolist() == ["a", "b", "all"]
    np.testing.assert_allclose(table["texture_ratio"], 1.0)
    np.testing.assert_allclose(table["pixel_std_ratio"], 1.0)
    table = quality.texture_table(flat, labels, real, labels, ["a", "b"])
    np.testing.assert_allclose(table["texture_ratio"], 0.0)
    assert list(table.columns) == quality.TEXTURE_COLUMNS
    with pytest.raises(ValueError, match="uint8 RGB"):
        quality.texture_energy(real.astype(np.float32))


# --- choosing the guidance scale on val ---------------------------------------------------------


def sweep_table(rows, judge, solver="dpmsolver++"):
    keys = ["guidance_scale", "consistency_mean", "fd_pool_vs_val"]
    return pd.DataFrame([{"solver": solver, **dict(zip(keys, r)), "judge_val_accuracy": judge} for r in rows])


def test_guidance_rule_prefers_fidelity_among_class_consistent_scales():
    rows = [(1.0, 0.40, 50.0), (2.0, 0.70, 60.0), (3.0, 0.75, 55.0), (4.0, 0.80, 70.0)]
    assert guidance.choose(sweep_table(rows, judge=0.66)) == ("dpmsolver++", 3.0)
    # None reaches the judge's accuracy: the most class-consistent one.
    assert guidance.choose(sweep_table(rows, judge=0.90)) == ("dpmsolver++", 4.0)
    with pytest.raises(ValueError, match="empty"):
        guidance.choose(sweep_table(rows, judge=0.5).iloc[:0])


def test_guidance_rule_compares_solvers_and_breaks_ties_in_sweep_order():
    ode = sweep_table([(2.0, 0.70, 60.0), (3.0, 0.80, 55.0)], judge=0.66)
    sde = sweep_table([(2.0, 0.75, 52.0), (3.0, 0.85, 58.0)], judge=0.66, solver="sde-dpmsolver++")
    assert guidance.choose(pd.concat([ode, sde], ignore_index=True)) == ("sde-dpmsolver++", 2.0)
    tied = sweep_table([(2.0, 0.75, 55.0)], judge=0.66, solver="sde-dpmsolver++")
    assert guidance.choose(pd.concat([ode, tied], ignore_index=True)) == ("sde-dpmsolver++", 2.0)  # 55 vs 55: lower scale
    same = pd.concat([ode.iloc[[1]], tied.assign(guidance_scale=3.0)], ignore_index=True)
    assert guidance.choose(same) == ("dpmsolver++", 3.0)  # same FD and scale: the sweep's first solver


def test_sweep_config_is_checked():
    with pytest.raises(ValueError, match="scales"):
        GuidanceSweepConfig(scales=())
    with pytest.raises(ValueError, match="per_class"):
        GuidanceSweepConfig(per_class=1)
    with pytest.raises(ValueError, match="solvers"):
        GuidanceSweepConfig(solvers=("euler",))
    with pytest.raises(ValueError, match="solver"):
        SamplingConfig(solver="ddim")


# --- the shipped generator -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped_smoke(tmp_path_factory):
    """The smoke profile's generator, built and shipped into a temporary assets folder."""
    root = tmp_path_factory.mktemp("shipcache")
    assets = tmp_path_factory.mktemp("assets")
    out = ship.build("smoke", assets / "smoke", progress=False, cache_root=root)
    return root, assets, out


def test_build_writes_a_self_describing_folder(shipped_smoke):
    _, _, out = shipped_smoke
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["profile"] == "smoke" and prov["command"] == "python -m histodistill.generate.ship build --profile smoke"
    assert sorted(prov["files"]) == sorted(f.relative_to(out).as_posix() for f in out.rglob("*")
                                           if f.is_file() and f.name != "provenance.json")
    assert {"vae/config.json", "transformer/config.json", "diffusion_history.csv"} <= set(prov["files"])
    assert prov["diffusion"]["config"]["shipped"] is False and prov["minutes"]["diffusion training"] is not None
    assert all(f.suffix != ".bin" and f.suffix != ".pt" for f in out.rglob("*"))  # safetensors only


def test_shipped_stages_load_exactly_what_was_trained(shipped_smoke, monkeypatch, capsys):
    root, assets, out = shipped_smoke
    monkeypatch.setattr(shipped, "ASSETS", assets)
    fresh = root.parent / "fresh"  # a machine that never trained it
    bundle = dataset.prepare_data(presets.stage_config("data", "smoke"), cache_root=fresh)
    ae_cfg = dataclasses.replace(presets.stage_config("autoencoder", "smoke"), shipped=True)
    dm_cfg = dataclasses.replace(presets.stage_config("diffusion", "smoke"), shipped=True)
    vae = stages.fit_autoencoder(ae_cfg, bundle, progress=False, cache_root=fresh)
    ldm = stages.fit_diffusion(dm_cfg, vae, bundle, progress=False, cache_root=fresh)
    said = capsys.readouterr().out
    assert said.count("loading the generator shipped in") == 2
    assert not list((fresh / "diffusion").glob(".work-*"))  # nothing was trained
    from safetensors.torch import load_file

    ours = load_file(ldm.file("pipeline") / "transformer" / "diffusion_pytorch_model.safetensors")
    theirs = load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert len(stages.history(ldm)) == dm_cfg.steps
    # A shipped result and a trained one never share a cache entry.
    assert ldm.key != shipped.identity("diffusion", dm_cfg, {"autoencoder": shipped.from_scratch_key(vae)},
                                       stages.VERSIONS["diffusion"])


def test_another_configuration_trains_from_scratch_and_says_why(shipped_smoke, monkeypatch, capsys):
    root, assets, _ = shipped_smoke
    monkeypatch.setattr(shipped, "ASSETS", assets)
    bundle = dataset.prepare_data(presets.stage_config("data", "smoke"), cache_root=root)
    ae_cfg = dataclasses.replace(presets.stage_config("autoencoder", "smoke"), shipped=True, steps=21)
    found = shipped.find("autoencoder", ae_cfg, {"data": bundle.artifact.key}, stages.VERSIONS["autoencoder"])
    assert found is None
    assert "steps is 21 here, 20 there" in capsys.readouterr().out


def test_a_changed_shipped_file_is_ignored(shipped_smoke, tmp_path, capsys):
    root, _, out = shipped_smoke
    copy = tmp_path / "assets" / "smoke"
    shutil.copytree(out, copy)
    weights = copy / "transformer" / "diffusion_pytorch_model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-8:] = b"\xff" * 8
    weights.write_bytes(bytes(blob))
    bundle = dataset.prepare_data(presets.stage_config("data", "smoke"), cache_root=root)
    ae_cfg = dataclasses.replace(presets.stage_config("autoencoder", "smoke"), shipped=True)
    assert shipped.find("autoencoder", ae_cfg, {"data": bundle.artifact.key}, stages.VERSIONS["autoencoder"],
                        root=tmp_path / "assets") is None
    said = capsys.readouterr().out
    assert "files missing or changed" in said and "transformer/diffusion_pytorch_model.safetensors" in said


def test_shipped_and_pretrained_exclude_each_other():
    with pytest.raises(ValueError, match="not both"):
        AutoencoderConfig(pretrained="somewhere", shipped=True)
