"""Your own data: an npz in MedMNIST's layout or a folder of class folders, images as microscopes
and other tools write them (16-bit, CMYK), and the messages that name what is wrong."""

import numpy as np
import pytest
from conftest import balanced_labels, make_images, row_keys
from PIL import Image

from histodistill import paths, presets
from histodistill.data import dataset, sources
from histodistill.data.sources import DataError


def prepare(**overrides):
    return dataset.prepare_data(presets.stage_config("data", "demo", **overrides))


# --- your own data: npz -----------------------------------------------------------------------


def test_own_npz_with_class_names_and_carved_val(tmp_path):
    path = tmp_path / "mine.npz"
    names = np.array(["tumour", "stroma", "normal"])
    np.savez(
        path,
        train_images=make_images(60),
        train_labels=balanced_labels(60, 3),
        test_images=make_images(9, seed=5),
        test_labels=balanced_labels(9, 3),
        class_names=names,
    )
    bundle = prepare(source="npz", path=str(path))
    assert bundle.class_names == ["tumour", "stroma", "normal"]
    assert bundle.meta["carved_splits"] == ["val"]
    assert len(bundle.splits["test"]) == 9  # given, not carved
    assert len(bundle.splits["val"]) == round(0.15 * 60)


def test_own_npz_grayscale_becomes_rgb(tmp_path):
    path = tmp_path / "gray.npz"
    np.savez(path, train_images=make_images(40)[..., 0], train_labels=balanced_labels(40, 2))
    bundle = prepare(source="npz", path=str(path))
    assert bundle.splits["train"].images.shape[-1] == 3
    assert bundle.class_names == ["class 0", "class 1"]


def bad_npz_cases():
    good = dict(train_images=make_images(30), train_labels=balanced_labels(30, 3))
    return {
        "float images": ({**good, "train_images": make_images(30).astype(np.float32) / 255}, "not uint8"),
        "wrong shape": ({**good, "train_images": make_images(30)[:, :, :, :2]}, "shape"),
        "count mismatch": ({**good, "train_labels": balanced_labels(29, 3)}, "30 images but 29 labels"),
        "label out of range": (
            {**good, "train_labels": np.r_[balanced_labels(29, 3), 7], "class_names": np.array(["a", "b", "c"])},
            r"0\.\.2",
        ),
        "class without images": (
            {**good, "class_names": np.array(["a", "b", "c", "d"])},
            r"classes \['d'\] have no train images",
        ),
        "float labels": ({**good, "train_labels": balanced_labels(30, 3).astype(float)}, "integers"),
        "missing keys": ({"images": make_images(3)}, "train_images and train_labels"),
        "half a split": ({**good, "val_images": make_images(3)}, "must come together"),
        "label beyond the class names": (
            {**good, "train_labels": np.r_[balanced_labels(29, 3), 12], "class_names": np.array(["a", "b", "c"])},
            r"0\.\.2 \(class_names has 3 names\); found \[12\]",
        ),
        "all-zero images": ({**good, "train_images": np.zeros_like(make_images(30))}, "all blank"),
        "floats cast to uint8": ({**good, "train_images": (make_images(30) > 127).astype(np.uint8)},
                                 "only take the values 0 and 1"),
        "one class": ({**good, "train_labels": np.zeros(30, int), "class_names": np.array(["a"])}, "one class"),
        "repeated class names": ({**good, "class_names": np.array(["a", "b", "a"])}, r"repeated: \['a'\]"),
        "empty class name": ({**good, "class_names": np.array(["a", "", "c"])}, "must be non-empty"),
        "class name with a newline": ({**good, "class_names": np.array(["a", "b\nc", "d"])}, "control"),
    }


@pytest.mark.parametrize("case", sorted(bad_npz_cases()))
def test_bad_npz_is_refused_and_nothing_is_kept(case, tmp_path):
    arrays, message = bad_npz_cases()[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message):
        prepare(source="npz", path=str(path))
    stage_dir = paths.cache_dir() / "data"
    assert not stage_dir.exists() or list(stage_dir.iterdir()) == []


def test_unreadable_or_missing_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(DataError, match="not a readable .npz"):
        prepare(source="npz", path=str(path))
    path.write_text("a text file named .npz")
    with pytest.raises(DataError, match="not a readable .npz archive") as refused:
        prepare(source="npz", path=str(path))
    assert "pickle" not in str(refused.value)
    with pytest.raises(DataError, match="does not exist"):
        prepare(source="npz", path=str(tmp_path / "nope.npz"))


def test_too_few_images_to_carve_a_split(tmp_path):
    path = tmp_path / "tiny.npz"
    np.savez(path, train_images=make_images(4), train_labels=np.array([0, 0, 0, 1]))
    with pytest.raises(DataError, match="single image"):
        prepare(source="npz", path=str(path))


# --- your own data: folders ----------------------------------------------------------------


def write_class_folders(root, classes=("normal", "tumour"), per_class=8, sizes=((40, 30), (28, 28))):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            pixels = np.full((h, w, 3), 40 * c + i, np.uint8)
            pixels[::2, ::2] += 20  # a little texture: a single-colour image is not a picture
            Image.fromarray(pixels).save(root / name / f"img{i}.png")


def test_folder_of_class_folders(tmp_path):
    root = tmp_path / "slides"
    write_class_folders(root)
    (root / "tumour" / "notes.txt").write_text("ignored: not an image")
    bundle = prepare(source="folder", path=str(root), size=32, val_fraction=0.25, test_fraction=0.25)
    assert bundle.class_names == ["normal", "tumour"]
    assert sum(len(p) for p in bundle.splits.values()) == 16
    assert bundle.splits["train"].images.shape[1:] == (32, 32, 3)


def test_folder_with_split_folders(tmp_path):
    root = tmp_path / "slides"
    write_class_folders(root / "train")
    write_class_folders(root / "val", per_class=2)
    write_class_folders(root / "test", per_class=3)
    bundle = prepare(source="folder", path=str(root))
    assert [len(bundle.splits[s]) for s in sources.SPLITS] == [16, 4, 6]
    assert bundle.meta["carved_splits"] == []


def test_folder_skips_hidden_files_and_names_what_it_ignores(tmp_path, capsys):
    root = tmp_path / "slides"
    write_class_folders(root, per_class=12)
    (root / "tumour" / "._img0.png").write_bytes(b"macOS resource fork, not a png")
    (root / "tumour" / "notes.txt").write_text("not an image")
    bundle = prepare(source="folder", path=str(root), size=28)
    assert sum(len(p) for p in bundle.splits.values()) == 24
    out = capsys.readouterr().out
    assert "1 file(s) that are not images" in out and "notes.txt" in out and "._img0" not in out


def test_folder_with_split_folders_and_class_folders_beside_them_is_refused(tmp_path):
    root = tmp_path / "slides"
    write_class_folders(root / "train")
    write_class_folders(root)  # normal/ and tumour/ at the root too: which layout is meant?
    with pytest.raises(DataError, match=r"also \['normal', 'tumour'\] beside them"):
        prepare(source="folder", path=str(root))


def test_a_class_name_that_is_no_file_name_is_warned_about(tmp_path, capsys):
    path = tmp_path / "names.npz"
    np.savez(path, train_images=make_images(60), train_labels=balanced_labels(60, 3),
             class_names=np.array(["a", "normal/colon", "c"]))
    assert prepare(source="npz", path=str(path)).class_names == ["a", "normal/colon", "c"]
    assert capsys.readouterr().out.count("class names ['normal/colon'] hold characters a file name cannot") == 1


def test_small_classes_are_warned_about_once(tmp_path, capsys):
    path = tmp_path / "small.npz"
    np.savez(path, train_images=make_images(40), train_labels=np.r_[np.zeros(34, int), np.ones(6, int)])
    prepare(source="npz", path=str(path), val_fraction=0.1, test_fraction=0.1)
    out = capsys.readouterr().out
    assert out.count("fewer than 10 train images: class 1 (6)") == 1


def test_folder_errors_name_the_problem(tmp_path):
    root = tmp_path / "slides"
    write_class_folders(root)
    (root / "tumour" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        prepare(source="folder", path=str(root))
    (root / "tumour" / "broken.png").unlink()
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="empty holds no images"):
        prepare(source="folder", path=str(root))
    with pytest.raises(DataError, match="does not exist"):
        prepare(source="folder", path=str(tmp_path / "nowhere"))


def test_folder_split_with_unknown_class(tmp_path):
    root = tmp_path / "slides"
    write_class_folders(root / "train")
    write_class_folders(root / "val", classes=("normal", "mystery"), per_class=2)
    with pytest.raises(DataError, match="mystery"):
        prepare(source="folder", path=str(root))


def test_changed_source_file_invalidates_the_cache(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, train_images=make_images(40), train_labels=balanced_labels(40, 2))
    first = prepare(source="npz", path=str(path))
    np.savez(path, train_images=make_images(40, seed=9), train_labels=balanced_labels(40, 2))
    second = prepare(source="npz", path=str(path))
    assert first.artifact.key != second.artifact.key
    assert row_keys(first.splits["train"].images) != row_keys(second.splits["train"].images)


# --- images as microscopes and other tools write them ----------------------------------------


def write_deep_folder(root, suffix, high, per_class=6, low=0):
    """Class folders of 16-bit grayscale images (Pillow mode I;16) whose values span low..high,
    e.g. a 12-bit sensor's 0..4095 stored in 16 bits."""
    rng = np.random.default_rng(1)
    for c, name in enumerate(("nuclei", "stroma")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            values = rng.integers(low, high + 1, (30, 34)).astype(np.uint16)
            values[0, 0], values[-1, -1] = low, high  # the whole span in every image
            Image.fromarray(values).save(root / name / f"img{i}{suffix}")
    with Image.open(next((root / "nuclei").iterdir())) as img:
        assert img.mode.startswith("I;16"), img.mode  # a real 16-bit file


@pytest.mark.parametrize("suffix,high", [(".png", 65535), (".png", 4095), (".tif", 65535), (".tif", 4095)])
def test_16_bit_images_are_scaled_to_8_bits_by_their_range_and_say_so(tmp_path, capsys, suffix, high):
    write_deep_folder(tmp_path / "deep", suffix, high)
    raw = sources.read_folder(tmp_path / "deep", 28)
    images = raw.splits["train"][0]
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28, 3)
    # Converted as 8-bit RGB they saturated (every value above 255 became 255): now the span
    # fills 0..255, and a uniform draw keeps its mean near the middle.
    assert images.min() == 0 and images.max() == 255 and 100 < images.mean() < 155
    out = capsys.readouterr().out
    assert "12 of 12 images have more than 8 bits" in out and f"span 0..{high}" in out


def test_8_bit_images_are_read_as_they_are(tmp_path, capsys):
    write_class_folders(tmp_path / "plain", sizes=((28, 28),))
    raw = sources.read_folder(tmp_path / "plain", 28)
    with Image.open(tmp_path / "plain" / "normal" / "img3.png") as img:
        assert np.array_equal(raw.splits["train"][0][3], np.asarray(img.convert("RGB")))
    assert "more than 8 bits" not in capsys.readouterr().out


@pytest.mark.parametrize("values,hint,not_hint", [
    (lambda rng: rng.uniform(0, 255, (20, 28, 28, 3)).astype(np.float32), "x.round().astype(np.uint8)", "x * 255"),
    (lambda rng: rng.uniform(0, 1, (20, 28, 28, 3)).astype(np.float32), "(x * 255).round()", None),
    (lambda rng: rng.integers(0, 4096, (20, 28, 28, 3)).astype(np.uint16), "(x - 0) / (4095 - 0) * 255", "x * 255"),
])
def test_a_float_or_16_bit_npz_gets_the_hint_its_values_need(tmp_path, values, hint, not_hint):
    path = tmp_path / "mine.npz"
    np.savez(path, train_images=values(np.random.default_rng(0)), train_labels=np.arange(20) % 2)
    with pytest.raises(DataError, match="not uint8") as refused:
        sources.read_npz(path)
    assert "their values span" in str(refused.value) and hint in str(refused.value)
    if not_hint:
        assert not_hint not in str(refused.value)


def test_a_folder_given_as_npz_and_a_file_given_as_folder_are_named(tmp_path):
    write_class_folders(tmp_path / "slides")
    with pytest.raises(DataError, match=r"is a folder, not an \.npz.*data_source folder"):
        prepare(source="npz", path=str(tmp_path / "slides"))
    np.savez(tmp_path / "mine.npz", train_images=make_images(20), train_labels=balanced_labels(20, 2))
    with pytest.raises(DataError, match=r"is a file, not a folder.*data_source npz"):
        prepare(source="folder", path=str(tmp_path / "mine.npz"))


def test_cmyk_jpegs_are_read_as_rgb(tmp_path):
    rng = np.random.default_rng(2)
    for name in ("normal", "tumour"):
        (tmp_path / "cmyk" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8), mode="CMYK").save(
                tmp_path / "cmyk" / name / f"img{i}.jpg")
    images = sources.read_folder(tmp_path / "cmyk", 28).splits["train"][0]
    assert images.dtype == np.uint8 and images.shape == (12, 28, 28, 3) and images.std() > 0


def test_channel_first_npz_and_string_labels_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "mine.npz"
    np.savez(path, train_images=make_images(20).transpose(0, 3, 1, 2), train_labels=balanced_labels(20, 2))
    with pytest.raises(DataError, match=r"\(20, 3, 28, 28\).*channel-first.*transpose\(0, 2, 3, 1\)"):
        sources.read_npz(path)
    np.savez(path, train_images=make_images(20), train_labels=np.array(["normal", "tumour"] * 10))
    with pytest.raises(DataError, match=r"labels must be integers.*np\.unique\(labels, return_inverse=True\)"):
        sources.read_npz(path)


def test_a_symlink_loop_inside_a_class_folder_is_not_followed(tmp_path):
    root = tmp_path / "slides"
    write_class_folders(root)
    (root / "normal" / "again").symlink_to(root / "normal")  # a folder that contains itself
    (root / "tumour" / "self.png").symlink_to(root / "tumour" / "self.png")  # a link to itself
    bundle = prepare(source="folder", path=str(root), val_fraction=0.25, test_fraction=0.25)
    assert sum(len(p) for p in bundle.splits.values()) == 16
