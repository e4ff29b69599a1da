"""The data stage's sources: the bundled split and full PathMNIST through medmnist (on a small
local file in medmnist's exact layout); your own npz and folders are in test_own_data.py."""

import numpy as np
import pytest
from conftest import balanced_labels, make_images, md5, row_keys
from PIL import Image

from histodistill import presets
from histodistill.data import dataset, sources
from histodistill.data.sources import DataError

medmnist = pytest.importorskip("medmnist")


def prepare(**overrides):
    return dataset.prepare_data(presets.stage_config("data", "demo", **overrides))



# --- the bundled subset ---------------------------------------------------------------------


def test_bundled_split_sizes_and_classes():
    bundle = prepare()
    assert {s: len(p) for s, p in bundle.splits.items()} == {"train": 600, "val": 150, "test": 250}
    assert bundle.class_names == list(sources.PATHMNIST_CLASSES)
    for part in bundle.splits.values():
        assert part.images.dtype == np.uint8 and part.images.shape[1:] == (28, 28, 3)
        assert part.labels.dtype == np.int64


def test_bundled_split_is_stratified():
    bundle = prepare()
    with np.load(sources.BUNDLED_FILE) as z:
        full = np.bincount(z["labels"], minlength=9)
    for split, share in (("test", 0.25), ("val", 0.15)):
        counts = np.bincount(bundle.splits[split].labels, minlength=9)
        assert np.all(np.abs(counts - full * share) <= 1.0), (split, counts, full * share)


def test_bundled_split_is_disjoint_and_complete():
    bundle = prepare()
    with np.load(sources.BUNDLED_FILE) as z:
        original = sorted(row_keys(z["images"]))
    parts = [row_keys(bundle.splits[s].images) for s in sources.SPLITS]
    assert sorted(sum(parts, [])) == original  # nothing lost, nothing duplicated
    train, val, test = map(set, parts)
    assert not (train & val) and not (train & test) and not (val & test)


def test_split_is_deterministic_and_seeded(tmp_path):
    a = prepare()
    b = dataset.prepare_data(presets.stage_config("data", "demo"), cache_root=tmp_path / "other")
    assert a.artifact.path != b.artifact.path
    for split in sources.SPLITS:
        np.testing.assert_array_equal(a.splits[split].images, b.splits[split].images)
    c = prepare(seed=1)
    assert row_keys(c.splits["test"].images) != row_keys(a.splits["test"].images)


def test_second_call_reads_the_cache(capsys):
    prepare()
    capsys.readouterr()
    prepare()
    assert "cached result" in capsys.readouterr().out


def test_cap_per_class_and_resize():
    bundle = prepare(max_train_per_class=5, size=64)
    assert np.all(np.bincount(bundle.splits["train"].labels) == 5)
    assert bundle.splits["test"].images.shape[1:] == (64, 64, 3)
    assert len(bundle.splits["test"]) == 250  # the cap touches train only


def test_medmnist_style_dataset():
    ds = dataset.HistoDataset("val", profile="demo")
    assert len(ds) == 150
    image, target = ds[0]
    assert isinstance(image, Image.Image) and image.size == (28, 28)
    assert target.shape == (1,) and 0 <= int(target[0]) < 9
    assert ds.info["label"]["0"] == "adipose"
    assert ds.labels.shape == (150, 1)
    with pytest.raises(ValueError, match="split"):
        dataset.HistoDataset("training")


def test_class_tables():
    bundle = prepare()
    summary = dataset.summary_table(bundle)
    assert list(summary.index) == ["train", "val", "test"]
    assert summary.loc["val", "origin"].startswith("carved")
    counts = dataset.class_counts(bundle)
    assert counts["train"].sum() == 600 and len(counts) == 9


# --- full PathMNIST through medmnist, on a small local file ----------------------------------


def write_medmnist_npz(path, size=28, counts=(18, 9, 9)):
    arrays = {}
    for i, (split, n) in enumerate(zip(sources.SPLITS, counts)):
        arrays[f"{split}_images"] = make_images(n, size, seed=i)
        arrays[f"{split}_labels"] = balanced_labels(n, 9).astype(np.uint8)[:, None]
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.fixture
def fake_pathmnist(tmp_path, monkeypatch):
    """A tiny file in medmnist's exact layout, with medmnist's INFO pointing at it."""
    served = tmp_path / "served"
    served.mkdir()
    files = {}
    for size in (28, 64):
        name = "pathmnist.npz" if size == 28 else f"pathmnist_{size}.npz"
        arrays = write_medmnist_npz(served / name, size)
        flag = "" if size == 28 else f"_{size}"
        monkeypatch.setitem(medmnist.INFO["pathmnist"], f"url{flag}", (served / name).as_uri())
        monkeypatch.setitem(medmnist.INFO["pathmnist"], f"MD5{flag}", md5(served / name))
        files[size] = (served / name, arrays)
    return files


def test_pathmnist_downloads_checks_and_keeps_official_splits(fake_pathmnist, tmp_path):
    root = tmp_path / "medmnist_root"
    bundle = prepare(source="pathmnist", path=str(root))
    assert (root / "pathmnist.npz").is_file()  # downloaded (from a file:// URL)
    _, arrays = fake_pathmnist[28]
    for split in sources.SPLITS:
        np.testing.assert_array_equal(bundle.splits[split].images, arrays[f"{split}_images"])
        np.testing.assert_array_equal(bundle.splits[split].labels, arrays[f"{split}_labels"][:, 0])
    assert bundle.class_names[8] == "colorectal adenocarcinoma epithelium"
    assert bundle.meta["carved_splits"] == []


def test_pathmnist_served_size_and_resize(fake_pathmnist, tmp_path):
    root = tmp_path / "root"
    assert prepare(source="pathmnist", path=str(root), size=64).splits["train"].images.shape[1] == 64
    assert (root / "pathmnist_64.npz").is_file()
    resized = prepare(source="pathmnist", path=str(root), size=32)  # read 64, resize to 32
    assert resized.splits["val"].images.shape[1:] == (32, 32, 3)


def test_pathmnist_rejects_a_damaged_file(fake_pathmnist, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "pathmnist.npz").write_bytes(b"not the real file")
    with pytest.raises(DataError, match="MD5"):
        prepare(source="pathmnist", path=str(root))


def test_pathmnist_offline_gives_one_clear_error(tmp_path, monkeypatch):
    # Port 9 on loopback refuses the connection at once, as an offline machine does.
    monkeypatch.setitem(medmnist.INFO["pathmnist"], "url", "http://127.0.0.1:9/pathmnist.npz")
    root = tmp_path / "root"
    with pytest.raises(DataError) as info:
        prepare(source="pathmnist", path=str(root))
    message = str(info.value)
    assert "pathmnist.npz" in message and str(root) in message
    assert "download" in message and "data_source='bundled'" in message
    assert info.value.__suppress_context__  # no chained traceback soup
    assert not (root / "pathmnist.npz").exists() and not (root / "pathmnist.npz.part").exists()


def test_pathmnist_without_download_names_the_file(tmp_path):
    with pytest.raises(DataError, match="download is switched off"):
        prepare(source="pathmnist", path=str(tmp_path), download=False)


def test_pathmnist_class_names_match_medmnist():
    labels = medmnist.INFO["pathmnist"]["label"]
    assert list(sources.PATHMNIST_CLASSES) == [labels[str(i)] for i in range(9)]
