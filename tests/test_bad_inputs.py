"""Bad inputs and faults from the hardening issue: each case is a test asserting what it prints.

Every case of the issue, and the test that covers it (``new`` = a test in this file, or for
cases 24-26 and 29 in test_bad_inputs_runner.py; the others are in the test file named). Where an existing test covers a case only in part, this
file adds a test for the rest, listed after it.

  Cache
   1  train_images.npy overwritten in place,     test_cache.py::test_a_same_size_change_is_caught_by_its_content_digest
      same size -> discarded, file named,         (any cached file); new: test_case01_same_size_overwrite_of_train_images_is_rebuilt
      rebuilt                                     (the data stage's own train_images.npy, through dataset.prepare_data)
   2  0xFF over part of a cached model           new: test_case02_ff_bytes_in_a_cached_safetensors_model_are_not_served
      .safetensors -> discarded/rebuilt           (stages.fit_classifier's classifier.safetensors)
   3  64 zero bytes in a cached pool.npz ->      new: test_case03_zero_bytes_in_a_cached_pool_npz_are_named_not_bad_zip
      discarded, file named, no BadZipFile        (stages.sample_pool, its pipeline stubbed)
   4  truncated latest diffusion checkpoint ->   test_generative.py::test_an_unreadable_checkpoint_falls_back_to_the_one_before
      falls back to the previous one
   5  disk full while writing a stage ->         test_cache.py::test_a_full_disk_is_named_and_nothing_is_kept (errno ENOSPC);
      one CacheError, nothing kept                new: test_case05_disk_full_in_the_data_stage_without_enospc_is_one_cache_error
                                                  (numpy's "problem writing element" OSError, no errno, in dataset.prepare_data)
  Committed results
   6  --only 01 -p data_source npz -p data_path  test_runner.py::test_a_changed_profile_needs_its_own_run_name (-p image_size);
      my.npz, no --run-name -> refused            new: test_case06_own_data_without_a_run_name_is_refused_before_running
   7  --profile smoke --run-name demo -> refused test_runner.py::test_a_changed_profile_needs_its_own_run_name
   8  --run-name ../../escape -> refused         test_runner.py::test_run_names_are_plain_folder_names[../../escape]
  Parameters (each refused before any notebook runs, naming parameter, value, what is allowed)
   9  -p ipc ten                                  test_runner.py::test_bad_parameters_are_refused_before_any_notebook_runs[ipc-ten-...]
  10  -p image_size 28.5                          test_runner.py::test_bad_parameters_are_refused_before_any_notebook_runs[image_size-28.5-...]
  11  -p networks resnet18                        test_runner.py::test_bad_parameters_are_refused_before_any_notebook_runs[networks-resnet18-...]
  12  -p select_seed -1                           test_runner.py::test_bad_parameters_are_refused_before_any_notebook_runs[select_seed--1-...]
  13  -p seed -1                                  test_runner.py::test_bad_parameters_are_refused_before_any_notebook_runs[seed--1-...]
                                                  (asserts "a seed" only); new, 9-13 in one command with each full line,
                                                  what is allowed included: test_case09_to_13_bad_parameters_together_each_named_in_full
  Degenerate data
  14  all-zero images refused                     test_data.py::test_bad_npz_is_refused_and_nothing_is_kept[all-zero images]
  15  floats 0..1 cast to uint8 refused           test_data.py::test_bad_npz_is_refused_and_nothing_is_kept[floats cast to uint8]
  16  a folder with one class refused             test_data.py::...[one class] (an npz); new: test_case16_a_folder_with_one_class_is_refused
  17  train/ split folders plus class folders     test_data.py::test_folder_with_split_folders_and_class_folders_beside_them_is_refused
      at the root refused
  18  duplicate, empty or "a/b" class names       test_data.py::test_bad_npz_is_refused_and_nothing_is_kept[repeated class names],
                                                  [empty class name], [class name with a newline];
                                                  test_data.py::test_a_class_name_that_is_no_file_name_is_warned_about ("a/b": warned)
  19  a class with 3 images warned once at data   test_data.py::test_small_classes_are_warned_about_once (6 images);
      preparation                                 new: test_case19_a_class_of_three_images_is_warned_once
  20  hidden macOS ._img000.png and .DS_Store     test_data.py::test_folder_skips_hidden_files_and_names_what_it_ignores (._img0.png);
      skipped                                     new: test_case20_macos_hidden_files_and_ds_store_are_skipped_silently
  21  label 12 among 9 classes -> names label 12  test_data.py::test_bad_npz_is_refused_and_nothing_is_kept[label beyond the class names]
      and the class_names count                   (3 classes); new: test_case21_label_12_among_nine_classes
  22  5 class names for 9 classes -> names        new: test_case22_five_class_names_for_nine_classes
      class_names
  23  a text file named .npz -> "not a readable   test_data.py::test_unreadable_or_missing_npz
      .npz archive", no pickle hint
  Noise
  24  no papermill "Executing Cell" chatter       test_runner.py::test_runner_stops_at_the_first_failure_and_names_it (a real kernel);
      before the FAILED block                     new: test_case24_25_failed_block_follows_the_cell_output_without_chatter
                                                  (a fake kernel: papermill's real logging, no kernel start)
  25  the FAILED block names the right cell       test_runner.py::test_runner_stops_at_the_first_failure_and_names_it ("in code cell [");
                                                  new: test_case24_25_... (code cell [4], its first line);
                                                  new: test_case25_failed_block_cell_number_points_into_the_written_notebook
                                                  (its position in the notebook as written, banner cells included)
  26  Ctrl-C ends with one line, exit 130         test_runner.py::test_ctrl_c_ends_with_one_line (a real kernel, SIGINT);
                                                  new: test_case26_interrupt_is_exactly_one_line_and_exit_130
  27  progress lines reach the log without a      test_runner.py::test_progress_bars_print_whole_lines_without_a_terminal,
      terminal                                    test_runner.py::test_the_runner_streams_progress_lines_from_a_notebook
  28  the autoencoder stage resumes from          test_stages.py::test_autoencoder_stops_resumes_and_ends_where_a_straight_run_ends,
      checkpoints                                 test_generative.py::test_interrupted_autoencoder_training_resumes_to_the_same_model
  JupyterLab / setup
  29  jupytext notebook is the default viewer     new: test_case29_lab_sh_makes_jupytext_notebook_the_default_viewer
      (scripts/lab.sh overrides)
  30  a JupyterLab save leaves notebook headers   test_runner.py::test_saving_a_notebook_in_jupyterlab_leaves_its_file_unchanged
      unchanged
  31  source scripts/setup.sh leaves the          test_environment.py::test_sourcing_setup_leaves_the_callers_shell_alone
      caller's shell options alone

  Beyond the issue's list, found while writing these:
      a damaged .npz of one's own whose deflate stream breaks -> a DataError naming the file:
      test_extra_npz_with_a_broken_deflate_stream_is_a_data_error
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import balanced_labels, make_images
from PIL import Image

from histodistill.data.own_data import write_npz
from histodistill import cache, paths, presets, runner
from histodistill.data import dataset, sources
from histodistill.data.sources import DataError
from histodistill.generate import stages

ROOT = Path(__file__).resolve().parents[1]


def prepare(**overrides):
    return dataset.prepare_data(presets.stage_config("data", "demo", **overrides))


def overwrite_in_place(path: Path, offset: int, payload: bytes) -> None:
    """Overwrite bytes of `path` in place (same size), keeping its mtime, and forget this
    process's memo of content digests, as the next run (a new process) starts without it."""
    stat = path.stat()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        assert fh.read(len(payload)) != payload  # the bytes really change
        fh.seek(offset)
        fh.write(payload)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    cache._DIGESTS.clear()


# --- cache -------------------------------------------------------------------------------------


def test_case01_same_size_overwrite_of_train_images_is_rebuilt(capsys):
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


def test_case02_ff_bytes_in_a_cached_safetensors_model_are_not_served(capsys):
    bundle = dataset.prepare_data(presets.stage_config("data", "smoke"))
    cfg = presets.stage_config("classifier", "smoke")
    first = stages.fit_classifier(cfg, bundle, progress=False)
    weights = first.file("classifier/classifier.safetensors")
    size = weights.stat().st_size
    overwrite_in_place(weights, size // 2, b"\xff" * 64)
    inputs = {"data": bundle.artifact.key}
    assert not cache.is_cached("classifier", cfg, inputs, stages.VERSIONS["classifier"])
    capsys.readouterr()

    again = stages.fit_classifier(cfg, bundle, progress=False)
    out = capsys.readouterr().out
    assert (f"[classifier] discarding the cached result in {first.path}: classifier/classifier.safetensors changed "
            f"(its content no longer matches the digest recorded when it was built); rebuilding it") in out
    assert "[classifier] built in" in out
    assert b"\xff" * 64 not in again.file("classifier/classifier.safetensors").read_bytes()[size // 2 - 64:size // 2 + 128]
    assert cache.is_cached("classifier", cfg, inputs, stages.VERSIONS["classifier"])
    stages.load_classifier(again)  # the rebuilt model loads


class FakePipeline:
    """Stands in for the trained diffusion pipeline: seeded random images of three classes."""

    class_names = ["adipose", "mucus", "tumour"]

    def __call__(self, labels, steps, guidance_scale, seed, batch_size, progress, solver, guidance_interval, span=None):
        start, stop = span or (0, len(labels))
        return np.random.default_rng(seed).integers(0, 256, (len(labels), 28, 28, 3), dtype=np.uint8)[start:stop]


def test_case03_zero_bytes_in_a_cached_pool_npz_are_named_not_bad_zip(monkeypatch, capsys):
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


def test_case05_disk_full_in_the_data_stage_without_enospc_is_one_cache_error(monkeypatch):
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


# --- committed results ----------------------------------------------------------------------------


def test_case06_own_data_without_a_run_name_is_refused_before_running(runs_nothing, output_root):
    with pytest.raises(SystemExit) as refused:
        runner.main(["--only", "01", "-p", "data_source", "npz", "-p", "data_path", "my.npz"])
    assert str(refused.value) == (
        "-p data_path, data_source changes the demo profile, and an unnamed run writes into figures/demo/ and "
        "paper_results/demo/, the results committed in the repository; name this run (--run-name NAME) or pass "
        "--overwrite to replace them")
    assert runs_nothing == []
    assert not (output_root / "figures").exists() and not (output_root / "paper_results").exists()


# --- parameters ------------------------------------------------------------------------------------


def test_case09_to_13_bad_parameters_together_each_named_in_full(runs_nothing):
    with pytest.raises(SystemExit) as refused:
        runner.main(["--run-name", "mine", "-p", "ipc", "ten", "-p", "image_size", "28.5", "-p", "networks",
                     "resnet18", "-p", "select_seed", "-1", "-p", "seed", "-1"])
    lines = str(refused.value).splitlines()
    assert lines[0] == "bad parameter(s); nothing was run:"
    assert sorted(line.strip() for line in lines[1:]) == sorted([
        "-p ipc 'ten': sets selection.ipc, which takes a whole number",
        "-p image_size 28.5: sets data.size, which takes a whole number",
        "-p networks 'resnet18': sets evaluation.networks, which takes a tuple of texts, e.g. ('convnet',)",
        "-p select_seed -1: sets selection.seed, a seed: a whole number >= 0",
        "-p seed -1: sets data.seed, a seed: a whole number >= 0",
    ])
    assert runs_nothing == []


# --- degenerate data -----------------------------------------------------------------------------


def write_class_folders(root, classes=("normal", "tumour"), per_class=12):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((28, 28, 3), 40 * c + i, np.uint8)
            pixels[::2, ::2] += 20  # a little texture: a single-colour image is not a picture
            Image.fromarray(pixels).save(root / name / f"img{i:03d}.png")


def test_case16_a_folder_with_one_class_is_refused(tmp_path):
    root = tmp_path / "slides"
    write_class_folders(root, classes=("tumour",))
    with pytest.raises(DataError) as refused:
        prepare(source="folder", path=str(root))
    assert str(refused.value) == "folder: slides: one class ('tumour'); classification needs at least two"
    stage_dir = paths.cache_dir() / "data"
    assert not stage_dir.exists() or list(stage_dir.iterdir()) == []


def test_case19_a_class_of_three_images_is_warned_once(tmp_path, capsys):
    path = tmp_path / "small.npz"
    labels = np.r_[np.zeros(30, int), np.ones(30, int), np.full(3, 2)]
    np.savez(path, train_images=make_images(63), train_labels=labels, class_names=np.array(["a", "b", "rare"]))
    prepare(source="npz", path=str(path))
    prepare(source="npz", path=str(path))  # the next notebook reads the cached data: no second warning
    out = capsys.readouterr().out
    warning = ("[data] warning: npz: small.npz: classes with fewer than 10 train images: rare (3); their val/test "
               "share, selection and metrics rest on a handful of images")
    assert out.count(warning) == 1 and out.count("warning") == 1


def test_case20_macos_hidden_files_and_ds_store_are_skipped_silently(tmp_path, capsys):
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


def test_case21_label_12_among_nine_classes(tmp_path):
    names = list(sources.PATHMNIST_CLASSES)
    path = npz_with(tmp_path, np.r_[balanced_labels(44, 9), 12], names)
    with pytest.raises(DataError) as refused:
        prepare(source="npz", path=str(path))
    assert str(refused.value) == "npz: mine.npz: train labels must lie in 0..8 (class_names has 9 names); found [12]"


def test_case22_five_class_names_for_nine_classes(tmp_path):
    path = npz_with(tmp_path, balanced_labels(45, 9), ["a", "b", "c", "d", "e"])
    with pytest.raises(DataError) as refused:
        prepare(source="npz", path=str(path))
    assert str(refused.value) == ("npz: mine.npz: train labels must lie in 0..4 (class_names has 5 names); "
                                  "found [5, 6, 7, 8]")


def test_extra_npz_with_a_broken_deflate_stream_is_a_data_error(tmp_path):
    """Not in the issue's list: a compressed .npz of one's own (np.savez_compressed, as the
    pool and the distilled product are written) damaged inside the compressed stream."""
    path = tmp_path / "damaged.npz"
    write_npz(path, make_images(36), np.repeat(np.arange(3), 12), ["a", "b", "c"])
    with open(path, "r+b") as fh:
        fh.seek(100)
        fh.write(bytes(64))
    with pytest.raises(DataError, match=r"damaged.npz is not a readable .npz file \(error: .*write it again"):
        sources.read_npz(path)
