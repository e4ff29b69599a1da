"""The rehearsal file: full PathMNIST's layout at any size, labelled as not data, readable
as one's own data, and made of changed copies of the bundled images."""

import numpy as np
import pytest

from histodistill.data.config import DataConfig
from histodistill.data import rehearsal, sources

SMALL = {"train": 300, "val": 40, "test": 30}


def test_the_rehearsal_file_has_pathmnist_layout_and_reads_as_own_data(tmp_path):
    path = rehearsal.write_file(tmp_path, SMALL, seed=0)
    with np.load(path, allow_pickle=False) as z:
        assert {f"{s}_{k}" for s in SMALL for k in ("images", "labels")} | {"class_names", "notice"} == set(z.files)
        for split, n in SMALL.items():
            assert z[f"{split}_images"].shape == (n, 28, 28, 3) and z[f"{split}_images"].dtype == np.uint8
            assert z[f"{split}_labels"].shape == (n, 1)
        assert "NOT DATA" in str(z["notice"])
    raw = sources.read_source(DataConfig(source="npz", path=str(path)))
    assert list(raw.class_names) == list(sources.PATHMNIST_CLASSES)
    assert {s: len(raw.splits[s][1]) for s in SMALL} == SMALL
    assert len(np.unique(raw.splits["train"][1])) == 9  # every class present
    assert rehearsal.PATHMNIST_SPLITS == {"train": 89_996, "val": 10_004, "test": 7_180}


def test_its_images_are_changed_copies_of_bundled_images():
    bundled = sources.read_source(DataConfig(source="bundled")).splits["train"][0]
    images = rehearsal.build({"train": 50}, seed=1)["train_images"]
    source_rows = {row.tobytes() for row in bundled}
    assert not any(row.tobytes() in source_rows for row in images)  # none byte-identical to a bundled image
    # Without shift and colour change, the jitter is one of the 8 turns and flips of its source.
    some = bundled[:20]
    turned = rehearsal.jitter(some, np.random.default_rng(0), shift=0, colour=0.0)
    for source, image in zip(some, turned):
        variants = [np.rot90(source, k) for k in range(4)]
        variants += [v[:, ::-1] for v in variants]
        assert any(np.array_equal(image, v) for v in variants)


def test_a_written_file_is_kept_and_the_same_seed_builds_the_same_file(tmp_path):
    path = rehearsal.write_file(tmp_path, SMALL, seed=0)
    stamp = path.stat().st_mtime_ns
    assert rehearsal.write_file(tmp_path, SMALL, seed=0) == path and path.stat().st_mtime_ns == stamp
    a, b = rehearsal.build(SMALL, seed=3), rehearsal.build(SMALL, seed=3)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_the_rehearsal_profile_is_the_paper_profile_with_only_counts_cut():
    import dataclasses

    from histodistill import presets

    assert "rehearsal" in presets.PROFILES
    counts = {"epochs", "steps", "warmup_steps", "checkpoint_every", "eval_every", "budget_steps", "iterations",
              "control_steps", "per_class", "guidance_per_class", "seeds", "budget_seeds", "reference_models",
              "draws", "max_members"}
    for stage, paper in presets.PRESETS["paper"].items():
        rehearsal_cfg = presets.stage_config(stage, "rehearsal")
        changed = {f.name for f in dataclasses.fields(paper) if getattr(paper, f.name) != getattr(rehearsal_cfg, f.name)}
        assert changed <= counts | {"source"}, (stage, changed)
    # What full size is about stays: pool, IPC, widths, batch sizes.
    assert presets.stage_config("sampling", "rehearsal").per_class == 1000
    assert presets.stage_config("ablation", "rehearsal").guidance_per_class >= 2 * presets.stage_config("selection", "rehearsal").ipc
    assert presets.stage_config("selection", "rehearsal").ipc == 100
    assert presets.stage_config("diffusion", "rehearsal").hidden_size == presets.stage_config("diffusion", "paper").hidden_size
    assert presets.stage_config("downstream", "rehearsal").width_scale == 1.0
    assert presets.stage_config("data", "rehearsal").source == "rehearsal"


def test_the_data_stage_writes_and_reads_the_rehearsal_file_in_the_cache(tmp_path, monkeypatch):
    from histodistill.data import dataset

    monkeypatch.setattr(rehearsal, "PATHMNIST_SPLITS", SMALL)
    bundle = dataset.prepare_data(DataConfig(source="rehearsal"), cache_root=tmp_path)
    assert (tmp_path / "rehearsal" / rehearsal.FILE_NAME).is_file()
    assert {s: len(bundle.splits[s]) for s in SMALL} == SMALL  # the official-style splits are kept, none carved
    assert "NOT DATA" in bundle.meta["source"]  # the data record says what it is
    with pytest.raises(sources.DataError, match="rehearsal"):
        sources.read_source(DataConfig(source="rehearsal"))
