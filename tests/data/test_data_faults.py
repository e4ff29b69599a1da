"""The data stage's faults: a cached split changed on disk, a full disk, and degenerate data
(one class, a tiny class, hidden system files, labels beyond the class names, a damaged
archive), each refused or warned about with the message a user reads."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import balanced_labels, make_images, overwrite_in_place
from PIL import Image

from histodistill import cache, paths, presets
from histodistill.data import dataset, sources
from histodistill.data.own_data import write_npz
from histodistill.data.sources import DataError


def prepare(**overrides):
    return dataset.prepare_data(presets.stage_config("data", "demo", **overrides))


def test_a_cached_train_split_overwritten_in_place_is_rebuilt(capsys):
    first = prepare()
    images = first.splits["train"].images.copy()
    file = first.artifact.file("train_images.npy")
    overwrite_in_place(file, 1000, b"\x00\xff" * 32)
    capsys.readouterr()

    again = prepare()
    out = capsys.readouterr().out
    assert (f"[data] discarding the cached result in {first.artifact.path}: train_images.npy changed (its content no "
            f"longer matches the digest recorded when it was built); rebuilding it") in out
    assert "[data] built in" in out and "[data] cached result" not in out
    np.testing.assert_array_equal(again.splits["train"].images, images)


def test_a_full_disk_without_errno_in_the_data_stage_is_one_cache_error(monkeypatch):
    """numpy reports a full disk as "problem writing element N to file", an OSError without
    errno; the cache then looks at the free space and names the full disk."""
    real_save = np.save

    def save_until_full(file, array, *args, **kwargs):
        real_save(file, array[: len(array) // 2], *args, **kwargs)  # a half-written file
        raise OSError("problem writing element 128000 to file")

    monkeypatch.setattr(np, "save", save_until_full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 4096))
    with pytest.raises(cache.CacheError) as refused:
        prepare()
    message = str(refused.value)
    stage_dir = paths.cache_dir() / "data"
    assert message == (f"[data] the disk holding {stage_dir} is full (problem writing element 128000 to file); nothing "
                       f"was kept. Free some space, or point HISTODISTILL_CACHE at a disk with room, and run again")
    assert refused.value.__suppress_context__  # one message, not a chained traceback
    assert list(stage_dir.iterdir()) == []  # nothing kept, not even the half-written file

    # The same error with room on the disk is not called a full disk.
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 0, 10 << 30))
    with pytest.raises(OSError, match="problem writing element") as other:
        prepare()
    assert not isinstance(other.value, cache.CacheError)


def write_class_folders(root, classes=("normal", "tumour"), per_class=12):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((28, 28, 3), 40 * c + i, np.uint8)
            pixels[::2, ::2] += 20  # a little texture: a single-colour image is not a picture
            Image.fromarray(pixels).save(root / name / f"img{i:03d}.png")


def test_a_folder_with_one_class_is_refused(tmp_path):
    root = tmp_path / "slides"
    write_class_folders(root, classes=("tumour",))
    with pytest.raises(DataError) as refused:
        prepare(source="folder", path=str(root))
    assert str(refused.value) == "folder: slides: one class ('tumour'); classification needs at least two"
    stage_dir = paths.cache_dir() / "data"
    assert not stage_dir.exists() or list(stage_dir.iterdir()) == []


def test_a_class_of_three_images_is_warned_once(tmp_path, capsys):
    path = tmp_path / "small.npz"
    labels = np.r_[np.zeros(30, int), np.ones(30, int), np.full(3, 2)]
    np.savez(path, train_images=make_images(63), train_labels=labels, class_names=np.array(["a", "b", "rare"]))
    prepare(source="npz", path=str(path))
    prepare(source="npz", path=str(path))  # the next notebook reads the cached data: no second warning
    out = capsys.readouterr().out
    warning = ("[data] warning: npz: small.npz: classes with fewer than 10 train images: rare (3); their val/test "
               "share, selection and metrics rest on a handful of images")
    assert out.count(warning) == 1 and out.count("warning") == 1


def test_macos_hidden_files_and_ds_store_are_skipped_silently(tmp_path, capsys):
    root = tmp_path / "slides"
    write_class_folders(root)
    for folder in (root, root / "normal", root / "tumour"):
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1 Finder metadata")
    (root / "tumour" / "._img000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble resource fork")
    (root / "._tumour").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    bundle = prepare(source="folder", path=str(root), size=28)
    assert bundle.class_names == ["normal", "tumour"]
    assert sum(len(p) for p in bundle.splits.values()) == 24  # the 24 real images, nothing else
    out = capsys.readouterr().out
    assert "warning" not in out and "DS_Store" not in out and "._img000" not in out


def npz_with(tmp_path, labels, class_names):
    path = tmp_path / "mine.npz"
    np.savez(path, train_images=make_images(len(labels)), train_labels=np.asarray(labels),
             class_names=np.asarray(class_names))
    return path


def test_label_12_among_nine_classes_is_named(tmp_path):
    names = list(sources.PATHMNIST_CLASSES)
    path = npz_with(tmp_path, np.r_[balanced_labels(44, 9), 12], names)
    with pytest.raises(DataError) as refused:
        prepare(source="npz", path=str(path))
    assert str(refused.value) == "npz: mine.npz: train labels must lie in 0..8 (class_names has 9 names); found [12]"


def test_five_class_names_for_nine_classes_are_named(tmp_path):
    path = npz_with(tmp_path, balanced_labels(45, 9), ["a", "b", "c", "d", "e"])
    with pytest.raises(DataError) as refused:
        prepare(source="npz", path=str(path))
    assert str(refused.value) == ("npz: mine.npz: train labels must lie in 0..4 (class_names has 5 names); "
                                  "found [5, 6, 7, 8]")


def test_an_npz_with_a_broken_deflate_stream_is_a_data_error(tmp_path):
    """A compressed .npz of one's own (np.savez_compressed, as the pool and the distilled
    product are written) damaged inside the compressed stream."""
    path = tmp_path / "damaged.npz"
    write_npz(path, make_images(36), np.repeat(np.arange(3), 12), ["a", "b", "c"])
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(bytes(64))
    with pytest.raises(DataError, match=r"damaged.npz is not a readable .npz file \(error: .*write it again"):
        sources.read_npz(path)
