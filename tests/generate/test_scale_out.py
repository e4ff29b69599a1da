"""Diffusion training and pool sampling on several processes (accelerate, 2 CPU processes here)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from histodistill import cache, presets
from histodistill.data import dataset
from histodistill.generate import scale_out, stages


@pytest.fixture(scope="module")
def smoke_model(tmp_path_factory):
    """The smoke profile's autoencoder and denoiser, trained once in one process."""
    root = tmp_path_factory.mktemp("scale_out")
    bundle = dataset.prepare_data(presets.stage_config("data", "smoke"), cache_root=root)
    vae = stages.fit_autoencoder(presets.stage_config("autoencoder", "smoke"), bundle, progress=False, cache_root=root)
    ldm = stages.fit_diffusion(presets.stage_config("diffusion", "smoke"), vae, bundle, progress=False, cache_root=root)
    return root, bundle, vae, ldm


def test_a_batch_splits_evenly_or_not_at_all():
    parts = [scale_out.Shard(r, 4).part(32) for r in range(4)]
    assert [(p.start, p.stop) for p in parts] == [(0, 8), (8, 16), (16, 24), (24, 32)]
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        scale_out.Shard(0, 3).part(32)
    with pytest.raises(ValueError, match="positive integer"):
        scale_out.check_processes(0)


def test_two_processes_sample_the_pool_one_process_samples(smoke_model, tmp_path):
    root, _, _, ldm = smoke_model
    # 8 per class at batch 4: 72 images in 5 chunks of 16, shared 3 / 2 between the processes.
    cfg = presets.stage_config("sampling", "smoke", per_class=8, batch_size=4, solver="sde-dpmsolver++")
    one = stages.load_pool(stages.sample_pool(cfg, ldm, progress=False, cache_root=tmp_path / "one"))[0]
    two_artifact = stages.sample_pool(cfg, ldm, progress=False, cache_root=tmp_path / "two", processes=2)
    two = stages.load_pool(two_artifact)[0]
    assert one.shape == (72, 28, 28, 3)
    assert np.array_equal(one, two)  # byte for byte
    # ... and the pool a single uninterrupted call of the pipeline gives.
    pipe = stages.load_pipeline(ldm)
    labels = np.repeat(np.arange(9), 8)
    whole = pipe(labels, cfg.steps, cfg.guidance_scale, cfg.seed, cfg.batch_size, False, cfg.solver)
    assert np.array_equal(one, whole)
    work, _ = cache.work_dir("pool", cfg, {"diffusion": ldm.key}, stages.VERSIONS["pool"], tmp_path / "two")
    assert not work.exists()  # the chunks go once the pool is complete


def test_an_interrupted_pool_resumes_at_the_missing_chunks(smoke_model, tmp_path, monkeypatch):
    _, _, _, ldm = smoke_model
    cfg = presets.stage_config("sampling", "smoke", per_class=8, batch_size=4)
    straight = stages.load_pool(stages.sample_pool(cfg, ldm, progress=False, cache_root=tmp_path / "a"))[0]
    # A run that finished chunks 0, 2 and 4 of 5 before it was killed.
    work, _ = cache.work_dir("pool", cfg, {"diffusion": ldm.key}, stages.VERSIONS["pool"], tmp_path / "b")
    scale_out.sample_chunks(stages.load_pipeline(ldm), np.repeat(np.arange(9), 8), cfg, work,
                            scale_out.Shard(0, 2), progress=False)
    assert sorted(p.name for p in work.iterdir()) == ["chunk-00000.npy", "chunk-00002.npy", "chunk-00004.npy"]
    spans = []
    real_call = stages.ClassConditionalLDMPipeline.__call__
    monkeypatch.setattr(stages.ClassConditionalLDMPipeline, "__call__",
                        lambda self, *a, span=None, **k: spans.append(span) or real_call(self, *a, span=span, **k))
    resumed = stages.load_pool(stages.sample_pool(cfg, ldm, progress=False, cache_root=tmp_path / "b"))[0]
    assert spans == [(16, 32), (48, 64)]  # only the missing chunks were sampled
    assert np.array_equal(resumed, straight)


def test_two_process_training_stops_resumes_and_follows_the_one_process_run(smoke_model, tmp_path):
    root, bundle, vae, ldm = smoke_model
    dm_cfg = presets.stage_config("diffusion", "smoke")  # 20 steps at batch 32, a checkpoint every 10
    other = tmp_path / "cache"
    work, _ = cache.work_dir("diffusion", dm_cfg, {"autoencoder": vae.key}, stages.VERSIONS["diffusion"], other)
    assert stages.fit_diffusion(dm_cfg, vae, bundle, progress=False, max_steps=13, cache_root=other, processes=2) is None
    assert (work / "LATEST").read_text() == "step-0000010"  # written by process 0
    two = stages.fit_diffusion(dm_cfg, vae, bundle, progress=False, cache_root=other, processes=2)
    assert two.key == ldm.key  # the number of processes is not part of the result's identity
    assert stages.history(two)["step"].tolist() == list(range(1, 21))
    # The same steps as one process, up to the order of floating-point sums.
    np.testing.assert_allclose(stages.history(two)["loss"], stages.history(ldm)["loss"], rtol=1e-4)
    one_weights = stages.load_pipeline(ldm).transformer.state_dict()
    for name, value in stages.load_pipeline(two).transformer.state_dict().items():
        torch.testing.assert_close(value, one_weights[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_batch_the_processes_cannot_share_is_refused_before_launching(smoke_model, tmp_path):
    _, bundle, vae, _ = smoke_model
    odd = dataclasses.replace(presets.stage_config("diffusion", "smoke"), batch_size=33)
    with pytest.raises(ValueError, match="a batch of 33 cannot be split evenly over 2 processes"):
        stages.fit_diffusion(odd, vae, bundle, progress=False, cache_root=tmp_path, processes=2)


def test_each_launch_meets_on_a_port_free_now():
    import socket

    port = scale_out.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", port))  # free: two launches at once no longer share a fixed port
    assert 1024 <= port <= 65535
