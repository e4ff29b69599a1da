"""The ablations of notebook 06: the main table's code with one thing changed at a time.

    >>> ablations.start(("ipc", "guidance"), up, down_cfg, abl_cfg)  # queue their models, return
    >>> result = ablations.run("ipc", up, down_cfg, abl_cfg)   # trains (or waits for) what is not cached
    >>> result.summary        # one line per variant: its parameters, mean/std of the metrics
    >>> result.figure         # ACC and AUC against the varied parameter

Each ablation is a list of `evaluation.Job`s (a variant label, a training set, a recipe).
Unless an ablation varies it, a variant trains like the main table's InfoDist (CE) row:
cross-entropy, `abl.network`, and run i at training seed `seed + i` on the selection made
with seed `selection seed + i` (run 0: notebook 04's). So the variants that coincide with
the main table (InfoDist with the run's graph, k-means, random, the contrastive row, random
real at the same IPC) are read from its cache. Each variant is compared with its reference
variant run by run (`references`, `comparisons.paired_differences`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..classifiers import convnet
from ..classifiers.config import DownstreamConfig
from .config import AblationConfig
from ..generate import quality, stages
from ..select import distill, privacy_filter
from ..select.graphs import GraphError
from . import comparisons, evaluation, figures, tables
from .evaluation import Job
from .training_sets import from_selection
from ..classifiers.judge import load_classifier
from . import training_sets

NAMES = ("contrastive", "selection", "rank", "ipc", "pool_size", "guidance", "privacy_filter")


@dataclass
class Result:
    name: str
    runs: pd.DataFrame  # one line per trained model
    summary: pd.DataFrame  # one line per variant and network, with the variant's parameters
    figure: plt.Figure
    notes: list[str] = field(default_factory=list)  # variants skipped, and other remarks
    paired: pd.DataFrame | None = None  # each variant minus its reference, with intervals
    compared: dict[str, str] = field(default_factory=dict)  # variant -> the reference it is compared with


def _build(name: str, up, down: DownstreamConfig, abl: AblationConfig):
    """Ablation `name`'s jobs, its variants' parameters and its notes."""
    if name not in NAMES:
        raise ValueError(f"unknown ablation {name!r}; ablations are {NAMES}")
    base = dataclasses.replace(down, network=abl.network, contrastive="none")
    return BUILDERS[name](up, base, abl, evaluation.seeds(down, abl.seeds))


def start(names, up, down: DownstreamConfig, abl: AblationConfig) -> int:
    """Build the training sets of every ablation in `names`, then queue all their models in
    the workers at once (`evaluation.queue`, costliest first); `run` then waits for its own
    models. One queue leaves no worker idle at the end of each ablation. The sets are built
    before anything is queued: the guidance pools sample on all of this process's threads,
    and beside two training workers each took several times as long (the demo's 06 took
    381.5 s that way, against 372.8 s one ablation after another). Returns how many models
    were queued."""
    jobs = [job for name in names for job in _build(name, up, down, abl)[0]]
    return evaluation.queue(jobs, up.bundle)


def run(name: str, up, down: DownstreamConfig, abl: AblationConfig, progress: bool = True) -> Result:
    """Build, train (or read from the cache) and summarise ablation `name` (see `NAMES`)."""
    jobs, params, notes = _build(name, up, down, abl)
    runs = evaluation.run_jobs(jobs, up.bundle, desc=f"ablation {name}", progress=progress)
    summary = tables.summarise_runs(runs, by=("variant", "network"), bundle=up.bundle)
    summary = params.merge(summary, on="variant", how="right")
    compared = references(name, params, up)
    paired = comparisons.paired_differences(runs, up.bundle, compared, by="variant")
    return Result(name, runs, summary, _figure(name, summary), notes, paired, compared)


def references(name: str, params: pd.DataFrame, up) -> dict[str, str]:
    """Which variant each variant of ablation `name` is compared with (paired, with
    intervals): the main table's setting where the ablation has it (CE only; the run's
    selection graph; centrality; the whole pool; the run's guidance scale; the filter off),
    and for the IPC ablation, random real against InfoDist at each IPC."""
    variants = list(params["variant"])
    if name == "ipc":
        return {f"Random real, IPC {i}": f"InfoDist, IPC {i}" for i in params["images per class"]
                if f"Random real, IPC {i}" in variants and f"InfoDist, IPC {i}" in variants}
    if name == "contrastive":
        reference = "CE only"
    elif name == "selection":
        reference = f"infodist:{up.selection_cfg.graph}"
    elif name == "rank":
        reference = "centrality"
    elif name == "pool_size":
        reference = variants[int(np.argmax(params["pool per class"]))] if variants else ""
    elif name == "privacy_filter":
        reference = "filter off"
    else:  # guidance
        reference = f"guidance {up.sampling_cfg.guidance_scale:g}"
    return {v: reference for v in variants if v != reference} if reference in variants else {}


def val_differences(result: Result) -> pd.DataFrame:
    """Each compared variant's val AUC (of the checkpoint each run kept) against its
    reference's, run by run: the side of an ablation a default may be chosen on, where the
    paired intervals of `Result.paired` read test. One row per variant and network: mean
    val AUC of both, the mean difference and its smallest and largest over runs."""
    rows = []
    runs = result.runs
    for variant, reference in result.compared.items():
        for network in runs["network"].unique():
            mine = runs[(runs["variant"] == variant) & (runs["network"] == network)].set_index("seed")["val_auc"]
            theirs = runs[(runs["variant"] == reference) & (runs["network"] == network)].set_index("seed")["val_auc"]
            diff = (mine - theirs).dropna()
            if len(diff):
                rows.append({"variant": variant, "reference": reference, "network": network,
                             "val_auc": mine.mean(), "reference_val_auc": theirs.mean(), "diff": diff.mean(),
                             "diff_min": diff.min(), "diff_max": diff.max(), "runs": len(diff)})
    return pd.DataFrame(rows)


def _jobs(row: str, variant: str, train_sets, base: DownstreamConfig, seeds: list[int], **changes) -> list[Job]:
    """One job per seed; `train_sets` holds run i's set at position i."""
    return [Job(row, train_set, dataclasses.replace(base, seed=s, **changes), variant)
            for s, train_set in zip(seeds, train_sets)]


def _selected(up, seeds: list[int], pool=None, **changes) -> list:
    """Run i's training set: the selection with seed `selection seed + i` (from `pool`, by
    default the run's)."""
    pool = pool or up.pool
    return [from_selection(up.select(seed=up.selection_cfg.seed + i, pool=pool, **changes), pool)
            for i in range(len(seeds))]


def _contrastive(up, base, abl, seeds):
    infodist = _selected(up, seeds, method="infodist")
    jobs = _jobs("InfoDist", "CE only", infodist, base, seeds)
    params = [{"variant": "CE only", "contrastive": "none", "weight": 0.0}]
    for kind in abl.contrastive_kinds:
        for weight in abl.contrastive_weights:
            label = f"{kind}, weight {weight:g}"
            jobs += _jobs("InfoDist", label, infodist, base, seeds, contrastive=kind, contrastive_weight=weight)
            params.append({"variant": label, "contrastive": kind, "weight": weight})
    return jobs, pd.DataFrame(params), []


def _selection(up, base, abl, seeds):
    jobs, params, notes = [], [], []
    for method in abl.methods:
        name, _, graph = method.partition(":")
        changes = {"method": name, **({"graph": graph} if graph else {})}
        try:
            sets = _selected(up, seeds, **changes)
        except GraphError as err:  # e.g. the released graph, empty on large classes
            notes.append(f"{method} skipped: {str(err).split('. ')[0]}")
            continue
        jobs += _jobs(method, method, sets, base, seeds)
        params.append({"variant": method, "method": name, "graph": graph or ""})
    return jobs, pd.DataFrame(params), notes


def _rank(up, base, abl, seeds):
    jobs, params, picked = [], [], {}
    for rank in ("centrality", "flow"):
        picked[rank] = set(distill.load_selection(up.select(method="infodist", rank=rank))[0].tolist())  # run 0's
        jobs += _jobs("InfoDist", rank, _selected(up, seeds, method="infodist", rank=rank), base, seeds)
        params.append({"variant": rank, "rank": rank})
    shared = len(picked["centrality"] & picked["flow"]) / max(1, len(picked["centrality"]))
    for p in params:
        p["shared_with_other_rank"] = shared
    note = f"the two rankings pick {shared:.0%} of the same images (run 0's selections)"
    return jobs, pd.DataFrame(params), [note]


def _ipc(up, base, abl, seeds):
    pool_labels = stages.load_pool(up.pool)[1]
    pool_min = int(np.bincount(pool_labels).min())
    real_min = int(np.bincount(up.bundle.splits["train"].labels, minlength=up.bundle.n_classes).min())
    jobs, params, notes = [], [], []
    for ipc in abl.ipcs:
        if ipc <= pool_min:
            label = f"InfoDist, IPC {ipc}"
            jobs += _jobs("InfoDist", label, _selected(up, seeds, method="infodist", ipc=ipc), base, seeds)
            params.append({"variant": label, "method": "InfoDist", "images per class": ipc})
        else:
            notes.append(f"InfoDist at IPC {ipc} skipped: the pool holds {pool_min} images in its smallest class")
        if ipc <= real_min:
            label = f"Random real, IPC {ipc}"
            real = [training_sets.random_real(up.bundle, ipc, up.selection_cfg.seed + i) for i in range(len(seeds))]
            jobs += _jobs("Random real", label, real, base, seeds)
            params.append({"variant": label, "method": "Random real", "images per class": ipc})
        else:
            notes.append(f"Random real at IPC {ipc} skipped: the smallest real class has {real_min} train images")
    return jobs, pd.DataFrame(params), notes


def _pool_size(up, base, abl, seeds):
    pool_labels = stages.load_pool(up.pool)[1]
    full = int(np.bincount(pool_labels).min())
    ipc = up.selection_cfg.ipc
    jobs, params, notes = [], [], []
    for size in abl.pool_sizes:
        if size < ipc or size > full:
            notes.append(f"pool size {size} skipped: it must lie between the IPC ({ipc}) and the pool's {full}")
            continue
        pool = up.pool if size == full else up.pool_subset(size)  # the whole pool: the main table's models
        label = f"{size} per class"
        jobs += _jobs("InfoDist", label, _selected(up, seeds, pool=pool), base, seeds)
        params.append({"variant": label, "pool per class": size})
    return jobs, pd.DataFrame(params), notes


def _guidance(up, base, abl, seeds):
    judge = load_classifier(up.classifier)
    val = up.bundle.splits["val"]
    val_predictions = convnet.predict(judge, val.images).argmax(1)
    jobs, params = [], []
    for scale in abl.guidance_scales:
        pool = up.sample(guidance_scale=scale, per_class=abl.guidance_per_class)
        images, labels, names = stages.load_pool(pool)
        table, _ = quality.class_consistency(convnet.predict(judge, images).argmax(1), labels, val_predictions,
                                             val.labels, names)  # notebook 03's measure
        consistency = float(table.set_index("class").loc["mean over classes", "pool_accuracy"])
        label = f"guidance {scale:g}"
        jobs += _jobs("InfoDist", label, _selected(up, seeds, pool=pool), base, seeds)
        params.append({"variant": label, "guidance": scale, "pool class consistency": consistency})
    note = f"each guidance scale samples a fresh pool of {abl.guidance_per_class} images per class"
    return jobs, pd.DataFrame(params), [note]


def _privacy_filter(up, base, abl, seeds):
    """InfoDist on the whole pool ("filter off": the main table's InfoDist (CE) when notebook
    04 ran without the filter) and on the pool less its near-copies of train images
    ("filter on"): what the filter costs downstream."""
    jobs, params, notes = [], [], []
    for label, on in (("filter off", False), ("filter on", True)):
        try:
            sets = _selected(up, seeds, method="infodist", privacy_filter=on)
        except privacy_filter.FilterError as err:  # a class the filter leaves with fewer than ipc images
            notes.append(f"{label} skipped: {err}")
            continue
        # Run 0's selection, cached by now; the filter does not depend on the seed.
        table = distill.load_privacy_filter(up.select(method="infodist", privacy_filter=on))
        removed = 0 if table is None else int(table["removed"].sum())
        jobs += _jobs("InfoDist", label, sets, base, seeds)
        params.append({"variant": label, "privacy filter": on, "pool images removed": removed})
    return jobs, pd.DataFrame(params), notes


BUILDERS = {"contrastive": _contrastive, "selection": _selection, "rank": _rank, "ipc": _ipc,
            "pool_size": _pool_size, "guidance": _guidance, "privacy_filter": _privacy_filter}

TITLES = {
    "contrastive": "Contrastive term: none, SupCon or semi-push-pull, and its weight (InfoDist set)",
    "selection": "Selection method at the same IPC (cross-entropy)",
    "rank": "Order inside a module: modular centrality or flow",
    "ipc": "Images per class: InfoDist against random real images",
    "pool_size": "Pool images per class InfoDist selects from",
    "guidance": "Guidance scale of the sampler (fresh pools)",
    "privacy_filter": "Privacy-aware selection: InfoDist with the pool's near-copies of train images removed",
}


def _figure(name: str, summary: pd.DataFrame) -> plt.Figure:
    title = TITLES[name]
    if name == "contrastive":
        reference = summary[summary["contrastive"] == "none"].iloc[0]
        terms = summary[summary["contrastive"] != "none"]
        return figures.ablation(terms, "weight", title + " (dashed: CE only)", hue="contrastive",
                                   log_x=True, reference=reference)
    if name == "ipc":
        return figures.ablation(summary, "images per class", title, hue="method", log_x=True)
    if name == "pool_size":
        return figures.ablation(summary, "pool per class", title, log_x=True)
    if name == "guidance":
        return figures.ablation(summary, "guidance", title)
    return figures.ablation(summary, "variant", title)  # selection, rank, privacy_filter: one point per variant


def save(result: Result, run_name: str) -> list:
    """``paper_results/<run>/ablation_<name>.csv/.md/.tex``, the paired differences
    ``ablation_<name>_paired.csv/.md`` (test) with their val side ``ablation_<name>_val.csv``
    (`val_differences`), and ``figures/<run>/06_ablation_<name>.png``."""
    from .. import plots

    paths = tables.write_tables(result.summary, f"ablation_{result.name}", run_name, index="variant")
    if result.paired is not None and len(result.paired):
        paths += comparisons.write_paired(result.paired, f"ablation_{result.name}_paired", run_name, by="variant")
        val = paths[0].parent / f"ablation_{result.name}_val.csv"
        val_differences(result).to_csv(val, index=False)
        paths.append(val)
    plots.save(result.figure, f"06_ablation_{result.name}", run_name)
    return paths
