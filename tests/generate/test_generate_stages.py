"""The cached stages after the data: the shareable pipeline, resumable diffusion training,
the pool file's exact layout, and the run record that ties the notebooks together."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from histodistill import cache, presets, run_record
from histodistill.data import dataset, sources
from histodistill.generate import autoencoder, stages
from histodistill.generate.diffusion import build_noise_scheduler
from histodistill.generate.pipeline import ClassConditionalLDMPipeline
from histodistill.generate.sampling import dpm_solver
from histodistill.generate.uvit import UViT
from histodistill.generate.config import AutoencoderConfig, DiffusionConfig
from histodistill.classifiers import judge

NAMES = ["adipose", "mucus", "tumour"]


def tiny_pipeline() -> ClassConditionalLDMPipeline:
    torch.manual_seed(0)
    vae = autoencoder.build_autoencoder(AutoencoderConfig(block_out_channels=(8, 16, 16)), 28).eval()
    uvit = UViT(sample_size=7, in_channels=4, hidden_size=32, depth=3, num_heads=2, num_classes=3).eval()
    scheduler = dpm_solver(build_noise_scheduler(DiffusionConfig()))
    return ClassConditionalLDMPipeline(vae=vae, transformer=uvit, scheduler=scheduler, class_names=NAMES)


def test_pipeline_saves_in_diffusers_layout_and_loads_on_its_own(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "ldm")
    index = json.loads((tmp_path / "ldm" / "model_index.json").read_text())
    assert index["class_names"] == NAMES
    assert index["transformer"] == ["histodistill.generate.uvit", "UViT"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    for part in ("vae", "transformer"):
        assert (tmp_path / "ldm" / part / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "ldm" / "scheduler" / "scheduler_config.json").is_file()

    loaded = ClassConditionalLDMPipeline.from_pretrained(tmp_path / "ldm", low_cpu_mem_usage=False)
    assert loaded.class_names == NAMES
    kw = dict(num_inference_steps=4, guidance_scale=2.0, seed=3, progress=False)
    images = loaded(["tumour", 0, "mucus"], **kw)
    assert images.shape == (3, 28, 28, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, pipe(["tumour", 0, "mucus"], **kw))  # same model, same seed
    np.testing.assert_array_equal(images, loaded([2, 0, 1], **kw))  # names and ids agree
    assert not np.array_equal(images, loaded([2, 0, 1], **{**kw, "seed": 4}))


def test_a_pipeline_saved_by_the_flat_layout_still_loads(tmp_path):
    """Folders written before the package's stage subpackages name the U-ViT's module
    ``histodistill.uvit``, which no longer exists; loading reads each part by its class."""
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "old")
    index_file = tmp_path / "old" / "model_index.json"
    index = json.loads(index_file.read_text())
    index["transformer"] = ["histodistill.uvit", "UViT"]
    index_file.write_text(json.dumps(index))
    loaded = ClassConditionalLDMPipeline.from_pretrained(tmp_path / "old", low_cpu_mem_usage=False)
    kw = dict(num_inference_steps=2, guidance_scale=2.0, seed=0, progress=False)
    np.testing.assert_array_equal(loaded([0, 1, 2], **kw), pipe([0, 1, 2], **kw))
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        ClassConditionalLDMPipeline.from_pretrained(tmp_path)


def test_pipeline_batching_does_not_change_the_images():
    pipe = tiny_pipeline()
    kw = dict(num_inference_steps=3, guidance_scale=1.5, seed=0, progress=False)
    small, large = pipe([0, 1, 2, 1, 0], batch_size=2, **kw), pipe([0, 1, 2, 1, 0], batch_size=5, **kw)
    # The noise is drawn per image, so only the rounding of the networks' matrix products can
    # differ with the batch's shape (BLAS picks its kernel by shape and CPU: about 1e-5 in the
    # latents after a few steps); in uint8 that can move a pixel sitting on a .5 boundary by one.
    assert np.abs(small.astype(int) - large.astype(int)).max() <= 1
    assert (small == large).mean() > 0.99


def test_pipeline_rejects_unknown_classes_and_wrong_names():
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="unknown class 'tumor'.*knows"):
        pipe(["tumor"])
    with pytest.raises(ValueError, match="outside 0..2"):
        pipe([3])
    with pytest.raises(ValueError, match="2 class names for a denoiser of 3"):
        ClassConditionalLDMPipeline(vae=pipe.vae, transformer=pipe.transformer, scheduler=pipe.scheduler,
                                    class_names=NAMES[:2])


@pytest.fixture(scope="module")
def smoke_chain(tmp_path_factory):
    """The smoke profile's stages, once for this module, in their own cache."""
    root = tmp_path_factory.mktemp("chain")
    bundle = dataset.prepare_data(presets.stage_config("data", "smoke"), cache_root=root)
    return root, bundle


def test_diffusion_stops_resumes_completes_and_cleans_up(smoke_chain, capsys):
    root, bundle = smoke_chain
    ae_cfg = presets.stage_config("autoencoder", "smoke")
    dm_cfg = presets.stage_config("diffusion", "smoke")  # 20 steps, a checkpoint every 10
    vae = stages.fit_autoencoder(ae_cfg, bundle, progress=False, cache_root=root)
    latents = stages.load_latents(vae)
    assert latents.shape == (len(bundle.splits["train"]), 4, 14, 14) and latents.dtype == torch.float32
    assert abs(float(latents.std()) - 1.0) < 0.05  # the scaling factor gives unit variance

    work, _ = cache.work_dir("diffusion", dm_cfg, {"autoencoder": vae.key}, stages.VERSIONS["diffusion"], root)
    assert stages.fit_diffusion(dm_cfg, vae, bundle, progress=False, max_steps=13, cache_root=root) is None
    assert (work / "LATEST").read_text() == "step-0000010"  # the last checkpoint before the stop
    assert [p.name for p in (root / "diffusion").iterdir()] == [work.name]  # no result yet
    capsys.readouterr()

    ldm = stages.fit_diffusion(dm_cfg, vae, bundle, progress=False, cache_root=root)
    assert "resumed from step-0000010 (step 10 of 20)" in capsys.readouterr().out
    assert not work.exists()  # checkpoints go once the result is complete
    history = stages.history(ldm)
    assert history["step"].tolist() == list(range(1, 21))
    assert (ldm.path / "pipeline" / "model_index.json").is_file()

    again = stages.fit_diffusion(dm_cfg, vae, bundle, progress=False, cache_root=root)
    assert again.key == ldm.key and "[diffusion] cached result" in capsys.readouterr().out


def test_pixel_space_denoiser_learns_the_images_and_its_pipeline_has_no_autoencoder(smoke_chain):
    root, bundle = smoke_chain
    vae = stages.fit_autoencoder(presets.stage_config("autoencoder", "smoke"), bundle, progress=False, cache_root=root)
    latent_cfg = presets.stage_config("diffusion", "smoke")
    pixel_cfg = dataclasses.replace(latent_cfg, space="pixel", patch_size=4)
    train = bundle.splits["train"]
    x, labels = stages.training_set(pixel_cfg, vae, bundle)
    assert x.shape == (8 * len(train), 3, 28, 28)  # the 8 flips and turns of every image
    torch.testing.assert_close(x[: len(train)], autoencoder.to_model_range(train.images))
    np.testing.assert_array_equal(labels, np.tile(train.labels, 8))
    # Keyed by the data, not by the autoencoder it does not use.
    assert stages.denoiser_inputs(pixel_cfg, vae, bundle) == {"data": bundle.artifact.key}
    assert stages.denoiser_inputs(latent_cfg, vae, bundle) == {"autoencoder": vae.key}

    ldm = stages.fit_diffusion(pixel_cfg, vae, bundle, progress=False, cache_root=root)
    assert sorted(p.name for p in (ldm.path / "pipeline").iterdir()) == ["model_index.json", "scheduler", "transformer"]
    pipe = stages.load_pipeline(ldm)
    assert pipe.vae is None and pipe.transformer.config.in_channels == 3
    images = pipe([0, 1], num_inference_steps=3, seed=0, progress=False)
    assert images.shape == (2, 28, 28, 3) and images.dtype == np.uint8
    torch.testing.assert_close(pipe.to_model_space(train.images[:2]), autoencoder.to_model_range(train.images[:2]))


def test_an_option_added_later_changes_no_key_at_its_default():
    """The demo's shipped generator was keyed before `space` existed: at its default the
    field is left out of the key (and of the saved configuration), set it is in."""
    cfg = presets.stage_config("diffusion", "demo")
    assert "space" not in cache.to_dict(cfg)
    assert cache.to_dict(dataclasses.replace(cfg, space="pixel"))["space"] == "pixel"
    assert cache.stage_key("diffusion", cfg, {}, 1) != cache.stage_key("diffusion", dataclasses.replace(cfg, space="pixel"), {}, 1)
    with pytest.raises(ValueError, match="space"):
        DiffusionConfig(space="voxel")


def test_autoencoder_stops_resumes_and_ends_where_a_straight_run_ends(smoke_chain, tmp_path, capsys):
    root, bundle = smoke_chain
    ae_cfg = presets.stage_config("autoencoder", "smoke")  # 20 steps, a checkpoint every 2
    straight = stages.fit_autoencoder(ae_cfg, bundle, progress=False, cache_root=root)
    other = tmp_path / "cache"
    work, _ = cache.work_dir("autoencoder", ae_cfg, {"data": bundle.artifact.key}, stages.VERSIONS["autoencoder"], other)
    assert stages.fit_autoencoder(ae_cfg, bundle, progress=False, max_steps=9, cache_root=other) is None
    assert "[autoencoder] stopped early; checkpoints kept in" in capsys.readouterr().out
    assert (work / "LATEST").read_text() == "step-0000009"
    assert [p.name for p in (other / "autoencoder").iterdir()] == [work.name]  # no result yet

    resumed = stages.fit_autoencoder(ae_cfg, bundle, progress=False, cache_root=other)
    assert "resumed from step-0000009 (step 9 of 20)" in capsys.readouterr().out
    assert not work.exists()  # checkpoints go once the result is complete
    assert resumed.key == straight.key
    assert torch.equal(stages.load_latents(resumed), stages.load_latents(straight))


def test_pool_file_has_the_medmnist_layout_and_loads_as_own_data(smoke_chain):
    root, bundle = smoke_chain
    vae = stages.fit_autoencoder(presets.stage_config("autoencoder", "smoke"), bundle, progress=False, cache_root=root)
    ldm = stages.fit_diffusion(presets.stage_config("diffusion", "smoke"), vae, bundle, progress=False, cache_root=root)
    cfg = presets.stage_config("sampling", "smoke")  # 4 per class
    pool = stages.sample_pool(cfg, ldm, progress=False, cache_root=root)

    with np.load(pool.file(stages.POOL_FILE), allow_pickle=False) as z:
        assert sorted(z.files) == ["class_names", "train_images", "train_labels"]
        assert z["train_images"].shape == (36, 28, 28, 3) and z["train_images"].dtype == np.uint8
        assert z["train_labels"].shape == (36, 1) and z["train_labels"].dtype == np.uint8
        assert z["train_labels"].ravel().tolist() == np.repeat(np.arange(9), 4).tolist()
        assert z["class_names"].tolist() == bundle.class_names
    raw = sources.read_npz(pool.file(stages.POOL_FILE))  # the reader of "your own data"
    assert raw.class_names == bundle.class_names and len(raw.splits["train"][1]) == 36

    # Same configuration: the same pool, from the cache. Another guidance: a new pool,
    # while the trained model is reused.
    assert stages.sample_pool(cfg, ldm, progress=False, cache_root=root).key == pool.key
    other = stages.sample_pool(presets.stage_config("sampling", "smoke", guidance_scale=1.0), ldm,
                               progress=False, cache_root=root)
    assert other.key != pool.key
    assert not np.array_equal(stages.load_pool(other)[0], stages.load_pool(pool)[0])


def test_pretrained_autoencoder_folder_is_used_and_keyed_by_its_files(tmp_path, smoke_chain):
    root, bundle = smoke_chain
    torch.manual_seed(1)
    folder = tmp_path / "my-vae"
    autoencoder.build_autoencoder(AutoencoderConfig(block_out_channels=(8, 16)), 28).save_pretrained(folder)
    cfg = AutoencoderConfig(pretrained=str(folder))
    vae = stages.fit_autoencoder(cfg, bundle, progress=False, cache_root=root)
    assert stages.history(vae).empty  # nothing trained here
    assert stages.load_latents(vae).shape[1:] == (4, 14, 14)  # two levels: 28 -> 14
    assert stages.reconstruction_table(vae, cfg)["autoencoder"].item() == str(folder)

    autoencoder.build_autoencoder(AutoencoderConfig(block_out_channels=(8, 8)), 28).save_pretrained(folder)
    assert stages.fit_autoencoder(cfg, bundle, progress=False, cache_root=root).key != vae.key


def test_classifier_stage_is_cached_and_loads(smoke_chain):
    root, bundle = smoke_chain
    cfg = presets.stage_config("classifier", "smoke")
    first = judge.fit_classifier(cfg, bundle, progress=False, cache_root=root)
    model = judge.load_classifier(first)
    assert len(stages.history(first)) == cfg.epochs
    assert judge.fit_classifier(cfg, bundle, progress=False, cache_root=root).key == first.key
    val = bundle.splits["val"]
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 9) and len(val.labels) > 0


# --- the run record -----------------------------------------------------------------------


def test_run_record_round_trips_configurations():
    ae_cfg = presets.stage_config("autoencoder", "smoke", block_out_channels=(4, 8))
    run_record.record("r1", "smoke", data=presets.stage_config("data", "smoke"), autoencoder=ae_cfg)
    assert run_record.upstream("r1", "smoke", "autoencoder") == ae_cfg  # tuples survive JSON
    assert run_record.upstream("r1", "smoke", "data") == presets.stage_config("data", "smoke")


def test_run_record_says_which_notebook_to_run():
    with pytest.raises(run_record.RunError, match="run notebook 02 first with run_name='r2'"):
        run_record.upstream("r2", "demo", "diffusion")
    run_record.record("r2", "smoke", data=presets.stage_config("data", "smoke"))
    with pytest.raises(run_record.RunError, match="recorded with profile 'smoke', not 'demo'"):
        run_record.upstream("r2", "demo", "data")
    run_record.record("r2", "demo", data=presets.stage_config("data", "demo"))  # a new profile starts afresh
    assert run_record.upstream("r2", "demo", "data") == presets.stage_config("data", "demo")
    with pytest.raises(ValueError, match="unknown stage"):
        run_record.record("r2", "demo", pool=presets.stage_config("sampling", "demo"))


# --- selection --------------------------------------------------------------------------------


def test_distill_stage_writes_the_product_and_reuses_the_embedding(smoke_chain, capsys):
    from histodistill.select import distill

    root, bundle = smoke_chain
    vae = stages.fit_autoencoder(presets.stage_config("autoencoder", "smoke"), bundle, progress=False, cache_root=root)
    ldm = stages.fit_diffusion(presets.stage_config("diffusion", "smoke"), vae, bundle, progress=False, cache_root=root)
    pool = stages.sample_pool(presets.stage_config("sampling", "smoke"), ldm, progress=False, cache_root=root)
    clf = judge.fit_classifier(presets.stage_config("classifier", "smoke"), bundle, progress=False, cache_root=root)
    cfg = presets.stage_config("selection", "smoke")  # infodist, knn, 2 per class from 4
    chosen = distill.distill(cfg, pool, clf, cache_root=root)

    indices, labels, nodes, graphs = distill.load_selection(chosen)
    assert np.bincount(labels).tolist() == [2] * 9
    _, pool_labels, names = stages.load_pool(pool)
    np.testing.assert_array_equal(pool_labels[indices], labels)
    assert len(nodes) == len(pool_labels) and nodes["selected"].sum() == 18
    assert graphs["class_name"].tolist() == names

    product = chosen.file(distill.PRODUCT)
    raw = sources.read_npz(product / "distilled.npz")  # loads as "your own data"
    assert raw.class_names == names and len(raw.splits["train"][1]) == 18
    card = json.loads((product / "data_card.json").read_text())
    assert card["method"] == "infodist" and card["config_hash"] == chosen.key
    assert card["source"]["pool_key"] == pool.key
    assert len(list(product.glob("grid_*.png"))) == 9

    capsys.readouterr()
    assert distill.distill(cfg, pool, clf, cache_root=root).key == chosen.key
    other = distill.distill(presets.stage_config("selection", "smoke", method="herding", ipc=1), pool, clf, cache_root=root)
    log = capsys.readouterr().out
    assert other.key != chosen.key and "[embedding] cached result" in log and "[selection] built" in log
    assert distill.load_selection(other)[2] is None  # a baseline has no graph
