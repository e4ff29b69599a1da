"""The generate stage's cached results damaged on disk are named and rebuilt, never served."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import overwrite_in_place

from histodistill import cache, presets
from histodistill.data import dataset
from histodistill.generate import stages
from histodistill.classifiers import judge


def test_a_cached_model_with_damaged_weights_is_rebuilt(capsys):
    bundle = dataset.prepare_data(presets.stage_config("data", "smoke"))
    cfg = presets.stage_config("classifier", "smoke")
    first = judge.fit_classifier(cfg, bundle, progress=False)
    weights = first.file("classifier/classifier.safetensors")
    size = weights.stat().st_size
    overwrite_in_place(weights, size // 2, b"\xff" * 64)
    inputs = {"data": bundle.artifact.key}
    assert not cache.is_cached("classifier", cfg, inputs, judge.VERSION)
    capsys.readouterr()

    again = judge.fit_classifier(cfg, bundle, progress=False)
    out = capsys.readouterr().out
    assert (f"[classifier] discarding the cached result in {first.path}: classifier/classifier.safetensors changed "
            f"(its content no longer matches the digest recorded when it was built); rebuilding it") in out
    assert "[classifier] built in" in out
    assert b"\xff" * 64 not in again.file("classifier/classifier.safetensors").read_bytes()[size // 2 - 64:size // 2 + 128]
    assert cache.is_cached("classifier", cfg, inputs, judge.VERSION)
    judge.load_classifier(again)  # the rebuilt model loads


class FakePipeline:
    """Stands in for the trained diffusion pipeline: seeded random images of three classes."""

    class_names = ["adipose", "mucus", "tumour"]

    def __call__(self, labels, steps, guidance_scale, seed, batch_size, progress, solver, guidance_interval, span=None):
        start, stop = span or (0, len(labels))
        return np.random.default_rng(seed).integers(0, 256, (len(labels), 28, 28, 3), dtype=np.uint8)[start:stop]


def test_zero_bytes_in_a_cached_pool_are_named_not_a_bad_zip(monkeypatch, capsys):
    monkeypatch.setattr(stages, "load_pipeline", lambda artifact: FakePipeline())
    diffusion = cache.Artifact("diffusion", "0" * 64, Path("unused"))
    cfg = presets.stage_config("sampling", "smoke")
    first = stages.sample_pool(cfg, diffusion, progress=False)
    pool = first.file(stages.POOL_FILE)
    images = stages.load_pool(first)[0]
    overwrite_in_place(pool, pool.stat().st_size // 2, bytes(64))
    capsys.readouterr()

    again = stages.sample_pool(cfg, diffusion, progress=False)
    captured = capsys.readouterr()
    assert (f"[pool] discarding the cached result in {first.path}: pool.npz changed (its content no longer matches "
            f"the digest recorded when it was built); rebuilding it") in captured.out
    assert "BadZipFile" not in captured.out + captured.err and "Bad CRC" not in captured.out + captured.err
    np.testing.assert_array_equal(stages.load_pool(again)[0], images)
