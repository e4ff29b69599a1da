"""The machinery of notebooks 05 and 06: training sets, the cached model stage, Distribution
Matching as a stage, the tables, pool subsets and the run's upstream loader."""

import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from histodistill.data.own_data import write_npz
from histodistill import cache, machine, paths, presets, run_record, workers
from histodistill.data import dataset
from histodistill.classifiers import metrics
from histodistill.evaluate import ablations, comparisons, evaluation, figures, tables
from histodistill.evaluate.evaluation import MAIN_ROWS
from histodistill.generate import stages
from histodistill.classifiers.config import DownstreamConfig
from histodistill.evaluate.config import AblationConfig, EvaluationConfig
from histodistill.evaluate import training_sets


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluation")
    return root, dataset.prepare_data(presets.stage_config("data", "smoke"), cache_root=root)


def test_random_real_subsets_are_balanced_seeded_and_keyed(smoke_data):
    _, bundle = smoke_data
    a, again, other = (training_sets.random_real(bundle, 3, s) for s in (0, 0, 1))
    assert np.bincount(a.labels).tolist() == [3] * 9 and a.ipc == 3
    np.testing.assert_array_equal(a.images, again.images)
    assert a.key == again.key != other.key
    assert not np.array_equal(a.images, other.images)
    everything = training_sets.random_real(bundle, 1000, 0)  # more than a class holds: all of it
    assert len(everything.labels) == len(bundle.splits["train"].labels)
    assert training_sets.full_real(bundle).key not in {a.key, other.key, everything.key}


def test_model_stage_trains_once_tests_once_and_keys_on_what_matters(smoke_data):
    root, bundle = smoke_data
    cfg = presets.stage_config("downstream", "smoke")
    train = training_sets.random_real(bundle, 2, 0)
    messages = []
    first = evaluation.train_model(cfg, train, bundle, cache_root=root, log=messages.append)
    result = evaluation.load_result(first)
    assert {"acc", "auc", "macro_f1", "per_class_acc", "best_step", "n_train"} <= set(result)
    assert result["n_train"] == 18 and result["n"] == len(bundle.splits["test"].labels)
    probs = evaluation.test_probabilities(first)
    assert probs.shape == (len(bundle.splits["test"].labels), 9)
    history = pd.read_csv(first.file("history.csv"))
    assert history["step"].tolist() == [2, 4]  # val every 2 steps; test is not in the history
    assert not any("test" in c for c in history.columns)

    again = evaluation.train_model(cfg, train, bundle, cache_root=root, log=messages.append)
    assert again.key == first.key and "cached result" in messages[-1]
    reseeded = evaluation.train_model(dataclasses.replace(cfg, seed=1), train, bundle, cache_root=root,
                                      log=messages.append)
    other_set = evaluation.train_model(cfg, training_sets.random_real(bundle, 2, 1), bundle, cache_root=root,
                                       log=messages.append)
    assert len({first.key, reseeded.key, other_set.key}) == 3

    runs_ = pd.DataFrame({"row": ["x", "x"], "model_key": [first.key, reseeded.key]})
    confusion = tables.pooled_confusion(runs_, bundle, cache_root=root)
    assert confusion.sum() == 2 * len(bundle.splits["test"].labels)
    per_class = tables.per_class_accuracy(runs_, bundle, cache_root=root)
    assert per_class.shape == (9, 1) and per_class["x"].between(0, 1).all()


def test_jobs_train_once_each_and_are_read_back(smoke_data, tmp_path):
    _, bundle = smoke_data
    cfg = presets.stage_config("downstream", "smoke")
    sets = [training_sets.random_real(bundle, 2, seed) for seed in (0, 1, 2)]
    jobs = [evaluation.Job("Random real", s, dataclasses.replace(cfg, seed=seed)) for seed, s in enumerate(sets)]
    jobs.append(evaluation.Job("Random real again", sets[0], cfg))  # the same model as jobs[0]
    jobs.append(evaluation.Job("Full real", training_sets.full_real(bundle), cfg))
    root = tmp_path / "cache"
    assert evaluation.train_together(jobs, bundle, progress=False, cache_root=root) == 4  # the repeat trains once
    assert evaluation.train_together(jobs, bundle, progress=False, cache_root=root) == 0  # all cached now
    table = evaluation.run_jobs(jobs, bundle, progress=False, cache_root=root)
    assert table["row"].tolist() == [j.row for j in jobs] and table["seed"].tolist() == [0, 1, 2, 0, 0]
    assert table["model_key"].iloc[0] == table["model_key"].iloc[3]


def test_models_trained_in_worker_processes_equal_those_trained_here(smoke_data, tmp_path, monkeypatch):
    """On CPU every model trains on one thread, so two worker processes give bit for bit the
    models one process gives, and the same as `train_model` trained alone."""
    _, bundle = smoke_data
    monkeypatch.setattr(workers, "MIN_STEPS", 0)  # smoke models are too small to send out
    cfg = presets.stage_config("downstream", "smoke")
    jobs = [evaluation.Job("Random real", training_sets.random_real(bundle, 2, seed), dataclasses.replace(cfg, seed=seed))
            for seed in range(3)]
    assert evaluation.train_together(jobs, bundle, progress=False, cache_root=tmp_path / "two", workers=2) == 3
    assert workers._POOL is not None and workers._POOL[0] == 2  # they did go to the workers
    assert evaluation.train_together(jobs, bundle, progress=False, cache_root=tmp_path / "one", workers=1) == 3
    for job in jobs:
        two, one = (evaluation.train_model(job.cfg, job.train_set, bundle, cache_root=tmp_path / name, log=lambda m: None)
                    for name in ("two", "one"))
        alone = evaluation.train_model(job.cfg, job.train_set, bundle, cache_root=tmp_path / "alone", log=lambda m: None)
        assert two.key == one.key == alone.key
        np.testing.assert_array_equal(evaluation.test_probabilities(two), evaluation.test_probabilities(one))
        np.testing.assert_array_equal(evaluation.test_probabilities(two), evaluation.test_probabilities(alone))
        assert two.file("history.csv").read_bytes() == one.file("history.csv").read_bytes()


def test_models_queued_ahead_are_waited_for_and_equal_those_trained_here(smoke_data, tmp_path, monkeypatch):
    """`queue` starts the models in the workers and returns; `run_jobs` over the same jobs
    waits for them instead of training them again, and they are the models trained here."""
    _, bundle = smoke_data
    monkeypatch.setattr(workers, "MIN_STEPS", 0)
    cfg = presets.stage_config("downstream", "smoke")
    jobs = [evaluation.Job("Random real", training_sets.random_real(bundle, 2, seed), dataclasses.replace(cfg, seed=seed))
            for seed in range(3)]
    root = tmp_path / "queued"
    assert evaluation.queue(jobs, bundle, cache_root=root, workers=2) == 3
    assert evaluation.queue(jobs, bundle, cache_root=root, workers=2) == 0  # queued already
    table = evaluation.run_jobs(jobs, bundle, progress=False, cache_root=root)
    assert not workers._QUEUED  # every queued model was collected
    assert evaluation.train_together(jobs, bundle, progress=False, cache_root=root) == 0
    for job, key in zip(jobs, table["model_key"]):
        here = evaluation.train_model(job.cfg, job.train_set, bundle, cache_root=tmp_path / "here", log=lambda m: None)
        assert here.key == key
        np.testing.assert_array_equal(evaluation.test_probabilities(here),
                                      evaluation.test_probabilities(evaluation.model_artifact(key, root)))
    monkeypatch.setattr(workers, "MIN_STEPS", 10**9)  # too little work for the workers: nothing is queued
    assert evaluation.queue(jobs, bundle, cache_root=tmp_path / "small", workers=2) == 0


def test_a_failure_in_queued_work_is_raised_where_it_is_waited_for():
    workers.start("fails", 2, math.sqrt, -1.0)
    workers.start("works", 2, math.sqrt, 4.0)
    with pytest.raises(ValueError, match="math domain error"):
        workers.finish(["fails", "works"])
    assert not workers.is_queued("fails") and not workers.is_queued("works")
    workers.finish(["never queued"])  # nothing to wait for


IDLE_WORKERS_INTERRUPTED = """
import math, multiprocessing, os, signal, time
from histodistill import workers
workers.start("done", 2, math.sqrt, 4.0)
workers.finish(["done"])
children = multiprocessing.active_children()
for child in children:  # what Jupyter does to a kernel's process group when it shuts the kernel down
    os.kill(child.pid, signal.SIGINT)
time.sleep(2)
workers.start("after", 2, math.sqrt, 9.0)  # an interrupted cell's next cell
workers.finish(["after"])
print(len(children), sum(child.is_alive() for child in children))
"""


def test_idle_workers_wait_on_when_jupyter_interrupts_them_and_leave_quietly():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", IDLE_WORKERS_INTERRUPTED], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    started, alive = map(int, done.stdout.split())
    assert started >= 1 and alive == started  # the pool is whole: the next work ran on it
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr


def test_the_queue_trains_the_costliest_models_first(smoke_data, tmp_path, monkeypatch):
    """Models go to the workers longest first (the full real set, then two-view SupCon, then
    plain IPC sets), so no worker is left with a long model at the end while the other idles."""
    _, bundle = smoke_data
    recipe = presets.stage_config("downstream", "smoke")
    small = training_sets.random_real(bundle, 2, 0)
    jobs = [evaluation.Job("Random real", small, recipe),
            evaluation.Job("CE + SupCon", small, dataclasses.replace(recipe, contrastive="supcon")),
            evaluation.Job("Full real train set", training_sets.full_real(bundle), recipe)]
    order = []
    monkeypatch.setattr(evaluation, "train_model", lambda cfg, train_set, *args, **kwargs: order.append(
        next(job.row for job in jobs if job.cfg == cfg and job.train_set is train_set)))
    evaluation.train_together(jobs, bundle, progress=False, cache_root=tmp_path, workers=1)
    assert order == ["Full real train set", "CE + SupCon", "Random real"]


def test_model_workers_come_from_the_variable_or_the_cpus(monkeypatch):
    monkeypatch.setenv(workers.VARIABLE, "3")
    assert workers.available() == 3
    monkeypatch.delenv(workers.VARIABLE)
    assert workers.available() == machine.available_cpus()
    monkeypatch.setenv(workers.VARIABLE, "two")
    with pytest.raises(ValueError, match="HISTODISTILL_MODEL_WORKERS must be a positive whole number"):
        workers.available()


def test_several_gpus_get_one_model_worker_each_and_one_gpu_none(monkeypatch):
    monkeypatch.delenv(workers.VARIABLE, raising=False)
    monkeypatch.setattr(workers.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(workers.torch.cuda, "device_count", lambda: 4)
    assert workers.available() == 4
    assert workers.count(tasks=10, steps=10**5) == 4  # independent groups spread over the GPUs
    assert workers.count(tasks=2, steps=10**5) == 2
    assert workers.count(tasks=10, steps=10**5, requested=8) == 4  # never two workers on one GPU
    monkeypatch.setattr(workers.torch.cuda, "device_count", lambda: 1)
    assert workers.count(tasks=10, steps=10**5) == 1  # one GPU: train in the calling process


def test_distribution_matching_stage_gives_ipc_uint8_images_per_class(smoke_data):
    root, bundle = smoke_data
    cfg = presets.stage_config("dm", "smoke")
    artifact = training_sets.fit_dm(cfg, bundle, ipc=2, progress=False, cache_root=root)
    learnt = training_sets.from_dm(artifact)
    assert learnt.images.dtype == np.uint8 and learnt.images.shape == (18, 28, 28, 3)
    assert learnt.labels.tolist() == np.repeat(np.arange(9), 2).tolist()
    assert len(pd.read_csv(artifact.file("losses.csv"))) == cfg.iterations
    other = training_sets.fit_dm(cfg, bundle, ipc=1, progress=False, cache_root=root)
    assert other.key != artifact.key  # the IPC is part of the key


def test_fit_dm_runs_in_workers_equal_those_run_here(smoke_data, tmp_path, monkeypatch):
    _, bundle = smoke_data
    monkeypatch.setattr(workers, "MIN_STEPS", 0)
    cfgs = [dataclasses.replace(presets.stage_config("dm", "smoke"), seed=seed) for seed in (0, 1)]
    assert training_sets.queue_dm_runs(cfgs, bundle, 2, progress=False, cache_root=tmp_path / "w", workers=2) == 2
    together = training_sets.fit_dm_runs(cfgs, bundle, 2, progress=False, cache_root=tmp_path / "w", workers=2)
    assert not workers._QUEUED
    for cfg, artifact in zip(cfgs, together):
        here = training_sets.fit_dm(cfg, bundle, 2, progress=False, cache_root=tmp_path / "here")
        assert here.key == artifact.key
        np.testing.assert_array_equal(training_sets.from_dm(here).images, training_sets.from_dm(artifact).images)
    assert together[0].key != together[1].key


def fake_runs(networks=("convnet", "resnet18"), n_seeds=3) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for row in MAIN_ROWS:
        for network in networks:
            for seed in range(n_seeds):
                rows.append({"row": row, "variant": "", "network": network, "seed": seed, "ipc": 10,
                             "n_train": 90, "acc": rng.uniform(), "auc": rng.uniform(),
                             "macro_f1": rng.uniform(), "best_step": 10, "model_key": "k"})
    return pd.DataFrame(rows)


def test_main_table_files_have_every_row_and_column():
    runs_ = fake_runs()
    summary = tables.summarise_runs(runs_)
    written = tables.write_tables(summary, "main_table", "unit")
    assert [p.name for p in written] == ["main_table.csv", "main_table.md", "main_table.tex"]

    table = pd.read_csv(paths.results_dir("unit") / "main_table.csv")
    assert list(dict.fromkeys(table["row"])) == list(MAIN_ROWS)
    assert set(zip(table["row"], table["network"])) == {(r, n) for r in MAIN_ROWS for n in ("convnet", "resnet18")}
    for key in ("acc", "auc", "macro_f1"):
        assert {f"{key}_mean", f"{key}_std"} <= set(table.columns)
    one = runs_[(runs_["row"] == "InfoDist (CE)") & (runs_["network"] == "resnet18")]
    line = table[(table["row"] == "InfoDist (CE)") & (table["network"] == "resnet18")].iloc[0]
    assert line["auc_mean"] == pytest.approx(one["auc"].mean())
    assert line["auc_std"] == pytest.approx(one["auc"].std(ddof=1))
    assert (table["n_runs"] == 3).all()

    markdown = (paths.results_dir("unit") / "main_table.md").read_text()
    for row in MAIN_ROWS:
        assert f"| {row} " in markdown
    header = markdown.splitlines()[0]
    for network in ("convnet", "resnet18"):
        for label in ("ACC", "AUC", "macro F1"):
            assert f"{network} {label}" in header
    table_text, note = markdown.split("\n\n")
    assert table_text.count("±") == len(MAIN_ROWS) * 2 * 3  # no intervals without the data: mean ± std
    assert note.startswith("Mean ± sample std over runs") and "runs per line: 3." in note
    assert "$\\pm$" in (paths.results_dir("unit") / "main_table.tex").read_text()


def test_display_table_keeps_an_ablations_parameters():
    runs_ = fake_runs(networks=("convnet",), n_seeds=2).assign(variant=lambda f: f["row"])
    summary = tables.summarise_runs(runs_, by=("variant", "network"))
    params = pd.DataFrame({"variant": list(MAIN_ROWS), "weight": np.linspace(0, 1, len(MAIN_ROWS))})
    shown = tables.display_table(params.merge(summary, on="variant"), index="variant")
    assert ("", "weight") in shown.columns and ("convnet", "macro F1") in shown.columns
    assert list(shown.index) == list(MAIN_ROWS)


def write_pool(per_class: int, n_classes: int = 3) -> cache.Artifact:
    labels = np.repeat(np.arange(n_classes), per_class)
    images = np.random.default_rng(0).integers(0, 256, (len(labels), 8, 8, 3), dtype=np.uint8)
    return cache.cached("pool", {"test": per_class}, lambda folder: write_npz(
        folder / stages.POOL_FILE, images, labels, ["a", "b", "c"]))


def test_pool_subset_keeps_the_first_images_of_every_class_and_nests():
    pool = write_pool(per_class=6)
    images, labels, names = stages.load_pool(pool)
    small, large = stages.pool_subset(pool, 2), stages.pool_subset(pool, 4)
    small_images, small_labels, small_names = stages.load_pool(small)
    assert small_names == names and np.bincount(small_labels).tolist() == [2, 2, 2]
    np.testing.assert_array_equal(small_images[small_labels == 1], images[labels == 1][:2])
    large_images = stages.load_pool(large)[0]
    assert all(any(np.array_equal(img, other) for other in large_images) for img in small_images)
    assert small.key != large.key != pool.key


def test_upstream_load_names_the_notebook_to_run():
    run_record.record("partial", "smoke", data=presets.stage_config("data", "smoke"))
    with pytest.raises(run_record.RunError, match="run notebook 02 first"):
        run_record.load("partial", "smoke")
    with pytest.raises(run_record.RunError, match="run notebook 05 first"):
        run_record.upstream("partial", "smoke", "downstream")


@pytest.mark.parametrize("changes, message", [
    ({"methods": ("kmeans:knn",)}, "infodist:knn"),
    ({"methods": ("infodist:grid",)}, "infodist:knn"),
    ({"contrastive_kinds": ("triplet",)}, "not among"),
    ({"network": "vgg"}, "not one of"),
    ({"ipcs": (0, 10)}, "positive"),
])
def test_ablation_config_refuses_what_it_cannot_run(changes, message):
    with pytest.raises(ValueError, match=message):
        AblationConfig(**changes)


def test_downstream_and_evaluation_configs_refuse_unknown_networks_and_terms():
    with pytest.raises(ValueError, match="not one of"):
        DownstreamConfig(network="vgg11")
    with pytest.raises(ValueError, match="not one of"):
        DownstreamConfig(contrastive="triplet")
    with pytest.raises(ValueError, match="networks"):
        EvaluationConfig(networks=())
    with pytest.raises(ValueError, match="unknown ablation"):
        ablations.run("dropout", None, DownstreamConfig(), AblationConfig())


def test_paired_differences_pair_runs_by_seed_and_write_their_tables(smoke_data, tmp_path, monkeypatch):
    _, bundle = smoke_data
    root = tmp_path / "cache"
    cfg = presets.stage_config("downstream", "smoke")
    sets = {"A": training_sets.random_real(bundle, 2, 0), "B": training_sets.random_real(bundle, 3, 0)}
    jobs = [evaluation.Job(row, s, dataclasses.replace(cfg, seed=seed)) for row, s in sets.items() for seed in (0, 1)]
    jobs.append(evaluation.Job("C", sets["A"], dataclasses.replace(cfg, seed=5)))  # no partner seed in A
    runs_ = evaluation.run_jobs(jobs, bundle, progress=False, cache_root=root)
    table = comparisons.paired_differences(runs_, bundle, reference="A", n_boot=200, cache_root=root)
    assert list(table.columns) == ["row"] + comparisons.PAIRED_COLUMNS
    assert table["row"].unique().tolist() == ["B"] and (table["n_runs"] == 2).all()  # C has no seed in common
    assert sorted(table["metric"]) == ["acc", "auc", "macro_f1"]
    assert (table["low"] <= table["high"]).all()
    by_map = comparisons.paired_differences(runs_, bundle, reference={"A": "B"}, n_boot=200, cache_root=root)
    np.testing.assert_allclose(by_map.set_index("metric")["diff"], -table.set_index("metric")["diff"])
    monkeypatch.setenv("HISTODISTILL_OUTPUT_ROOT", str(tmp_path / "out"))
    written = comparisons.write_paired(table, "paired", "check")
    assert [p.name for p in written] == ["paired.csv", "paired.md"]
    text = written[1].read_text()
    assert "convnet ACC" in text and "95 % interval" in text and "paired bootstrap" in text

    # Each row's own mean gets its interval the same way, into the table's csv, md and figure.
    summary = tables.summarise_runs(runs_, bundle=bundle, cache_root=root)
    intervals = comparisons.row_intervals(runs_, bundle, cache_root=root)
    assert list(intervals.columns) == ["row"] + comparisons.INTERVAL_COLUMNS
    for key in ("acc", "auc", "macro_f1"):
        assert (summary[f"{key}_low"] <= summary[f"{key}_mean"] + 1e-12).all()
        assert (summary[f"{key}_mean"] <= summary[f"{key}_high"] + 1e-12).all()
    np.testing.assert_allclose(intervals.set_index(["row", "metric"])["mean"].loc[[("B", "acc"), ("C", "acc")]],
                               summary.set_index("row").loc[["B", "C"], "acc_mean"])  # the runs' own mean
    probs = np.stack([evaluation.test_probabilities(evaluation.model_artifact(k, root))
                      for k in runs_[runs_["row"] == "A"]["model_key"]])
    expected = metrics.bootstrap_mean(probs, bundle.splits["test"].labels)["auc"]
    line = summary.set_index("row").loc["A"]
    assert (line["auc_low"], line["auc_high"]) == pytest.approx((expected["low"], expected["high"]))
    written = tables.write_tables(summary, "table", "check")
    text = written[1].read_text()
    assert "[" in text and "±" not in text and "bootstrap over runs and test images" in text
    assert "runs per line: 1 to 2" in text
    fig = figures.main_results(summary)
    assert "95 % interval" in fig._suptitle.get_text()
    plt.close(fig)
    with pytest.raises(ValueError, match="per group and network"):
        tables.summarise_runs(runs_, by=("row",), bundle=bundle, cache_root=root)
