"""The latent diffusion model's parts: U-ViT, the autoencoder, and resumable training."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import balanced_labels, make_images
from histodistill import presets
from histodistill.generate import autoencoder
from histodistill.checkpoints import CheckpointMismatch
from histodistill.classifiers.augmentation import dihedral_views
from histodistill.generate.diffusion import Trainer, TrainingDiverged
from histodistill.generate.uvit import UViT
from histodistill.generate.config import DiffusionConfig


def tiny_uvit(**kw):
    torch.manual_seed(0)
    return UViT(**{"sample_size": 7, "in_channels": 4, "hidden_size": 32, "depth": 3, "num_heads": 2, "num_classes": 3, **kw})


def test_uvit_shapes_and_patching():
    x = torch.randn(5, 4, 7, 7)
    t = torch.randint(0, 1000, (5,))
    y = torch.tensor([0, 1, 2, 3, 0])  # 3 is the null class
    assert tiny_uvit()(x, t, y).shape == x.shape
    x8 = torch.randn(2, 4, 8, 8)
    assert tiny_uvit(sample_size=8, patch_size=2)(x8, t[:2], y[:2]).shape == x8.shape
    with pytest.raises(ValueError, match="multiple"):
        tiny_uvit(sample_size=7, patch_size=2)
    with pytest.raises(ValueError, match="odd"):
        tiny_uvit(depth=4)


def test_uvit_is_conditioned_on_class_and_time():
    model = tiny_uvit().eval()
    x = torch.randn(1, 4, 7, 7).repeat(4, 1, 1, 1)
    t = torch.full((4,), 500)
    out = model(x, t, torch.tensor([0, 1, 2, model.null_class]))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not torch.allclose(out[i], out[j]), (i, j)
    other_time = model(x[:1], torch.tensor([10]), torch.tensor([0]))
    assert not torch.allclose(out[0], other_time[0])


def test_uvit_save_pretrained_round_trip(tmp_path):
    model = tiny_uvit().eval()
    model.save_pretrained(tmp_path / "uvit")
    assert (tmp_path / "uvit" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = UViT.from_pretrained(tmp_path / "uvit").eval()
    x, t, y = torch.randn(2, 4, 7, 7), torch.tensor([3, 900]), torch.tensor([1, 2])
    torch.testing.assert_close(model(x, t, y), loaded(x, t, y))


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    model = tiny_uvit()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, t, y = torch.randn(16, 4, 7, 7), torch.randint(0, 1000, (16,)), torch.randint(0, 3, (16,))
    target = torch.randn(16, 4, 7, 7)

    def loss():
        return torch.nn.functional.mse_loss(model(x, t, y), target)

    before = loss()
    before.backward()
    optimiser.step()
    assert loss().item() < before.item()


# --- the autoencoder -----------------------------------------------------------------------


def test_autoencoder_trains_encodes_and_decodes():
    cfg = presets.stage_config("autoencoder", "smoke", steps=15)
    images = make_images(24)
    model, history = autoencoder.train_autoencoder(images, cfg, progress=False)
    assert list(history.columns) == ["step", "l1", "kl", "edge"] and len(history) == 15
    latents = autoencoder.encode(model, images)
    assert latents.shape == (24, cfg.latent_channels, 14, 14)  # two levels: 28 -> 14
    assert abs(latents.std().item() - 1.0) < 0.05  # the scaling factor normalises them
    recon = autoencoder.decode(model, latents)
    assert recon.shape == images.shape and recon.dtype == np.uint8
    assert set(autoencoder.reconstruction_error(model, images)) == {"mae", "psnr_db"}


def test_interrupted_autoencoder_training_resumes_to_the_same_model(tmp_path, capsys):
    """Killed after step 7 (checkpoints every 2 steps of 20: the last at 7, the step it
    stopped on), resumed: the same weights, history and scaling factor as one straight run,
    with its own random streams (batches, flips, the posterior's noise) restored."""
    cfg = presets.stage_config("autoencoder", "smoke", steps=20, edge_weight=1.0)
    assert autoencoder.checkpoint_interval(cfg) == 2
    images = make_images(24)
    straight, straight_history = autoencoder.train_autoencoder(images, cfg, progress=False)

    work = tmp_path / "work"
    stopped, partial = autoencoder.train_autoencoder(images, cfg, progress=False, work_dir=work,
                                                     config_hash="h", max_steps=7)
    assert stopped is None and len(partial) == 7
    assert sorted(p.name for p in work.iterdir()) == ["LATEST", "step-0000006", "step-0000007"]
    torch.manual_seed(123)  # whatever the process did in between must not matter
    resumed, history = autoencoder.train_autoencoder(images, cfg, progress=False, work_dir=work, config_hash="h")
    assert "[autoencoder] resumed from step-0000007 (step 7 of 20)" in capsys.readouterr().out
    assert history.equals(straight_history)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert resumed.config.scaling_factor == straight.config.scaling_factor
    with pytest.raises(CheckpointMismatch, match="another configuration"):
        autoencoder.train_autoencoder(images, cfg, progress=False, work_dir=work, config_hash="other")


def test_autoencoder_loads_a_local_pretrained_folder(tmp_path):
    cfg = presets.stage_config("autoencoder", "smoke")
    model = autoencoder.build_autoencoder(cfg, 28)
    model.save_pretrained(tmp_path / "vae")
    loaded = autoencoder.load_pretrained_autoencoder(str(tmp_path / "vae"))
    x = autoencoder.to_model_range(make_images(2))
    torch.testing.assert_close(model.encode(x).latent_dist.mean, loaded.encode(x).latent_dist.mean)


def test_autoencoder_hub_id_offline_gives_a_clear_error():
    code = (
        "from histodistill.generate.autoencoder import load_pretrained_autoencoder, ModelLoadError\n"
        "try:\n    load_pretrained_autoencoder('some-org/some-vae')\n"
        "except ModelLoadError as e:\n    print('ERROR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert "ERROR cannot load an AutoencoderKL from hub id 'some-org/some-vae'" in out
    assert "internet" in out and "save_pretrained" in out


def test_image_range_round_trip():
    images = make_images(3)
    np.testing.assert_array_equal(autoencoder.to_uint8(autoencoder.to_model_range(images)), images)


# --- resumable diffusion training ------------------------------------------------------------


def trainer(tmp_path, latents=None, **overrides):
    cfg = presets.stage_config("diffusion", "smoke", **overrides)
    latents = torch.randn(30, 4, 8, 8, generator=torch.Generator().manual_seed(1)) if latents is None else latents
    return Trainer(latents, balanced_labels(30, 3), 3, cfg, tmp_path / "work", config_hash="hash-a")


def test_interrupted_training_resumes_to_the_same_state(tmp_path):
    straight = trainer(tmp_path / "a")
    straight.run(progress=False)

    first = trainer(tmp_path / "b")
    first.run(progress=False, max_steps=13)  # "killed" after step 13; last checkpoint: step 10
    resumed = trainer(tmp_path / "b")
    assert resumed.step == 10
    assert resumed.lr_schedule.last_epoch == 10
    resumed.run(progress=False)

    assert resumed.step == straight.step == 20
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    for a, b in zip(straight.ema.shadow_params, resumed.ema.shadow_params):
        assert torch.equal(a, b)
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]
    # The newest two checkpoints are kept.
    assert sorted(p.name for p in (tmp_path / "b" / "work").iterdir()) == ["LATEST", "step-0000010", "step-0000020"]


def test_an_unreadable_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    straight = trainer(tmp_path / "a")
    straight.run(progress=False)
    first = trainer(tmp_path / "b")
    first.run(progress=False, max_steps=15)  # checkpoints at 10 and 15 (the last step run)
    first.save_checkpoint()
    latest = tmp_path / "b" / "work" / "step-0000015" / "model.safetensors"
    latest.write_bytes(latest.read_bytes()[:100])  # truncated
    resumed = trainer(tmp_path / "b")
    out = capsys.readouterr().out
    assert "step-0000015 is unreadable" in out and "resumed from step-0000010" in out
    assert resumed.step == 10
    resumed.run(progress=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_checkpoint_of_another_config_is_refused(tmp_path):
    trainer(tmp_path).run(progress=False, max_steps=10)
    cfg = presets.stage_config("diffusion", "smoke")
    with pytest.raises(CheckpointMismatch, match="another configuration"):
        Trainer(torch.randn(30, 4, 8, 8), balanced_labels(30, 3), 3, cfg, tmp_path / "work", config_hash="hash-b")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    good = trainer(tmp_path)
    good.run(progress=False, max_steps=10)
    bad_latents = torch.full((30, 4, 8, 8), float("nan"))
    bad = trainer(tmp_path, latents=bad_latents)
    assert bad.step == 10
    with pytest.raises(TrainingDiverged, match="at step 11"):
        bad.run(progress=False)
    assert (tmp_path / "work" / "LATEST").read_text() == "step-0000010"


def test_ema_model_carries_the_average(tmp_path):
    run = trainer(tmp_path)
    run.run(progress=False)
    ema = run.ema_model()
    for p, shadow in zip(ema.parameters(), run.ema.shadow_params):
        assert torch.equal(p.data, shadow)
    assert any(not torch.equal(p, q) for p, q in zip(ema.parameters(), run.model.parameters()))


# --- sampling --------------------------------------------------------------------------------


def sample_latents(model, noise_scheduler, n_classes, cfg, progress=False):
    """`cfg.per_class` latents for every class through `sampling.denoise`, class-ordered, as
    the pipeline draws a pool: (latents, labels)."""
    from histodistill.generate.sampling import denoise

    labels = np.repeat(np.arange(n_classes), cfg.per_class)
    generator = torch.Generator().manual_seed(cfg.seed)
    latents = denoise(model, noise_scheduler, labels, cfg.steps, cfg.guidance_scale, generator,
                      cfg.batch_size, progress, cfg.solver, cfg.seed, cfg.guidance_interval)
    return latents, labels


def test_sampler_is_deterministic_for_a_seed_and_class_ordered():
    from histodistill.generate.diffusion import build_noise_scheduler

    model = tiny_uvit().eval()
    noise = build_noise_scheduler(presets.stage_config("diffusion", "smoke"))
    cfg = presets.stage_config("sampling", "smoke", per_class=3, steps=4, batch_size=4)
    a, labels = sample_latents(model, noise, 3, cfg, progress=False)
    b, _ = sample_latents(model, noise, 3, cfg, progress=False)
    assert a.shape == (9, 4, 7, 7) and list(labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c, _ = sample_latents(model, noise, 3, presets.stage_config("sampling", "smoke", per_class=3, steps=4, seed=1), progress=False)
    assert not torch.allclose(a, c)


def test_sde_sampler_is_seeded_per_image_and_independent_of_batch_size():
    from histodistill.generate.diffusion import build_noise_scheduler

    model = tiny_uvit().eval()
    noise = build_noise_scheduler(presets.stage_config("diffusion", "smoke"))
    cfg = presets.stage_config("sampling", "smoke", per_class=3, steps=4, batch_size=4, solver="sde-dpmsolver++")
    a, _ = sample_latents(model, noise, 3, cfg, progress=False)
    b, _ = sample_latents(model, noise, 3, dataclasses.replace(cfg, batch_size=2), progress=False)
    assert torch.isfinite(a).all()
    # Other batches, same images: the noise is drawn per image, so only the rounding of the
    # denoiser's matrix products may differ with the batch's shape (BLAS picks its kernel by
    # shape and CPU; measured 7.6e-6 on values of order 3 after 4 steps on an Intel Xeon).
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
    ode, _ = sample_latents(model, noise, 3, dataclasses.replace(cfg, solver="dpmsolver++"), progress=False)
    assert not torch.allclose(a, ode)  # the step noise is really added
    other, _ = sample_latents(model, noise, 3, dataclasses.replace(cfg, seed=1), progress=False)
    assert not torch.allclose(a, other)


def test_guidance_scale_one_is_the_conditional_model():
    from histodistill.generate.sampling import guided_noise

    model = tiny_uvit().eval()
    x, t, y = torch.randn(2, 4, 7, 7), torch.tensor([10, 10]), torch.tensor([0, 1])
    with torch.no_grad():
        torch.testing.assert_close(guided_noise(model, x, t, y, 1.0), model(x, t, y))
        uncond = model(x, t, torch.full_like(y, model.null_class))
        torch.testing.assert_close(guided_noise(model, x, t, y, 0.0), uncond, rtol=1e-5, atol=1e-6)


class GaussianOracle(torch.nn.Module):
    """The exact noise predictor for data x0 ~ N(0, s^2 I), plus a fixed relative error:
    E[eps | x_t] = sigma_t x_t / (alpha_t^2 s^2 + sigma_t^2). Stands in for a trained U-ViT."""

    def __init__(self, alphas_cumprod, s=1.0, error=0.0):
        super().__init__()
        self.alphas_cumprod, self.s, self.error = alphas_cumprod, s, error
        self.config = type("Config", (), {"in_channels": 4, "sample_size": 7})()
        self.null_class = 3

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, x, t, labels):
        a2 = self.alphas_cumprod[t.long()].view(-1, 1, 1, 1)
        eps = (1 - a2).sqrt() * x / (a2 * self.s**2 + 1 - a2)
        return eps * (1 + self.error)


@pytest.mark.parametrize("error", [0.0, 0.02])
def test_default_schedule_samples_the_right_scale_even_with_a_slightly_wrong_denoiser(error):
    """DPM-Solver++ predicts x0 = (x_t - sigma eps) / alpha, so where alpha_T is tiny (the
    cosine schedule: ~5e-5) a 2 % error in eps becomes a blow-up. The default schedule must
    give samples of the data's scale from the exact denoiser and from a slightly wrong one."""
    from histodistill.generate.diffusion import build_noise_scheduler
    from histodistill.generate.sampling import denoise

    noise_scheduler = build_noise_scheduler(DiffusionConfig())
    oracle = GaussianOracle(noise_scheduler.alphas_cumprod, s=0.7, error=error)
    labels = np.zeros(512, dtype=np.int64)
    x = denoise(oracle, noise_scheduler, labels, 25, 1.0, torch.Generator().manual_seed(0), progress=False)
    assert abs(float(x.std()) - 0.7) < 0.07
    assert float(x.abs().max()) < 6 * 0.7


def test_dihedral_views_are_the_eight_distinct_symmetries():
    image = make_images(1, size=6, seed=4)
    views = dihedral_views(image)
    assert len(views) == 8
    np.testing.assert_array_equal(views[0], image)
    assert len({v.tobytes() for v in views}) == 8  # a random image has no symmetry of its own
    for view in views:  # every view is a rearrangement of the same pixels
        np.testing.assert_array_equal(np.sort(view.ravel()), np.sort(image.ravel()))
    np.testing.assert_array_equal(views[1][0], np.rot90(image[0]))
    np.testing.assert_array_equal(views[4][0], image[0][:, ::-1])
