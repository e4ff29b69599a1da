# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version,-jupytext.text_representation.format_version
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Downstream evaluation: how much of the real data does the distilled set replace?
#
# - **Does:** checks the step budget on val, trains every row's classifiers, scores them once on test, compares them.
# - **Reads:** notebook 01's data (train, val, test), notebook 03's pool and judge, notebook 04's selection.
# - **Writes:** `paper_results/<run>/training_budget.csv`, `main_runs.csv`, `main_table.csv/.md/.tex`,
#   `paired_differences.csv/.md`, `distilled_copy_check.csv`; `figures/<run>/05_training_budget.png`,
#   `05_main_results.png`, `05_paired_differences.png`, `05_infodist_confusion.png`, `05_per_class_accuracy.png`,
#   `05_dm_images.png`, `05_dm_loss.png`.
#
# The paper's question. Classifiers are trained on each training set *only*, selected on
# the real **val** split, and judged once on the real **test** split:
#
# | row | training set |
# | --- | --- |
# | Full real train set | every real train image (the ceiling; not shareable) |
# | Random real | a random real subset at the distilled IPC (a new one per run; not shareable) |
# | Random synthetic | a random subset of the synthetic pool (new per run) |
# | k-means synthetic | the pool image nearest each k-means centroid |
# | InfoDist (CE) | notebook 04's selection, cross-entropy only |
# | InfoDist (CE + contrastive) | the same, plus the contrastive term (the paper's method) |
# | Distribution Matching | images *learnt* from the real train set (Zhao & Bilen 2023): a classic distillation, not human-readable |
#
# Each row is trained with every network of the profile (ConvNet and ResNet-18, instance
# norm; the demo trains ConvNet only, see below) `seeds` times, every model for the same
# number of steps; the table gives the mean of test ACC, AUC (one-vs-rest, unweighted mean,
# as medmnist's Evaluator) and macro F1 over the runs, each with a 95 % interval. Run i of a row draws everything random anew
# (its subset, its Infomap / k-means / DM seed, its network's initialisation; run 0 is
# notebook 04's selection), and run i of every row shares the same initialisation, so the
# rows are compared run by run, with confidence intervals (below). Every model is a cached
# stage: re-running with the same parameters reads them back, and notebook 06 reuses the
# ones it shares.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper | rehearsal: every parameter left as None takes this profile's value
run_name = None  # output folder under figures/ and paper_results/; None: the profile name
networks = None  # downstream networks, e.g. ("convnet", "resnet18")
seeds = None  # training runs per row and network
contrastive = None  # the term of the "InfoDist (CE + contrastive)" row: supcon | supcon_1view | push_pull
steps = None  # training steps of every model, whatever its set's size (one budget for every row)
confusion_network = "convnet"  # network whose InfoDist confusion matrix is shown
config = {}  # other fields, "stage.field": value, e.g. {"dm.iterations": 500} (all: histodistill/*/config.py)

# %%
import pandas as pd
from IPython.display import Markdown, display

from histodistill import machine, parameters, plots, run_record
from histodistill.classifiers import judge
from histodistill.evaluate import budget, comparisons, evaluation, figures, tables, training_sets

machine.configure_torch()  # a fixed thread count and deterministic kernels: a rerun repeats every digit
run_name = run_name or profile
up = run_record.load(run_name, profile)
down_cfg = parameters.configure("downstream", profile, globals())  # its network and contrastive term: set per model
eval_cfg = parameters.configure("evaluation", profile, globals())
dm_cfg = parameters.configure("dm", profile, globals())
run_record.record(run_name, profile, downstream=down_cfg, evaluation=eval_cfg, dm=dm_cfg)
print(f"data: {up.bundle.meta['source']}; IPC {up.selection_cfg.ipc}; "
      + ", ".join(f"{s}: {len(up.bundle.splits[s].labels)}" for s in ("train", "val", "test")))
down_cfg, eval_cfg, dm_cfg

# %% [markdown]
# ## How long to train: one budget, checked on val
# Every model trains for the same number of steps (`steps`), the full real set and a
# 90-image distilled set alike. Is that enough? InfoDist (CE), runs 0.. of the table below,
# trains at each budget of `evaluation.budget_steps` (each a full warm-up and cosine schedule), and
# the val accuracy at the end of training is compared: the rule picks the smallest budget
# that no longer one beats by more than `evaluation.budget_tolerance`. Only val decides; the runs at
# this run's budget are the table's own models.
#
# The demo trains ConvNet only: on 2 CPU cores a converged ResNet-18 run takes about 48 s,
# its 35 models of the table about half an hour more; `networks = ("convnet", "resnet18")`
# adds it (the paper profile trains both).

# %%
budget_runs = evaluation.run_jobs(budget.jobs(up, down_cfg, eval_cfg), up.bundle, desc="budget")
budget_history = budget.histories(budget_runs)
budget_curve = budget.curve(budget_history)
budget_picks = budget.choose(budget_curve, eval_cfg.budget_tolerance)
plots.save_table(budget_curve.set_index(["network", "budget"]), "training_budget", run_name)
fig = figures.training_budget(budget_curve, budget_history, budget_picks, down_cfg.steps)
plots.save(fig, "05_training_budget", run_name)
print(budget.verdict(budget_curve, budget_picks, down_cfg.steps))
budget_curve.round(3)

# %% [markdown]
# ## Train every model
# Rows x networks x seeds. Models already in the cache are read back instantly.

# %%
jobs, dm_artifacts = evaluation.main_jobs(up, down_cfg, eval_cfg, dm_cfg)
model_runs = evaluation.run_jobs(jobs, up.bundle, desc="main table")
plots.save_table(model_runs.set_index(["row", "network", "seed"]), "main_runs", run_name)
model_runs.groupby(["row", "network"], sort=False)[["acc", "auc", "macro_f1", "best_step"]].mean().round(3)

# %% [markdown]
# ## The main table
# The mean over the seeds, with a 95 % interval of that mean from a bootstrap over the runs
# and the test images (the csv also holds the sample std over seeds). The two real rows are
# references: they are exactly what a hospital cannot share. Two rows whose intervals overlap
# may still differ: they are tested on the same images, and the paired comparison below
# removes the noise they share.

# %%
summary = tables.summarise_runs(model_runs, bundle=up.bundle)
for path in tables.write_tables(summary, "main_table", run_name):
    print("wrote", path.name)
display(Markdown(tables.display_table(summary).to_markdown() + "\n\n" + tables.table_note(summary)))

# %%
fig = figures.main_results(summary)
plots.save(fig, "05_main_results", run_name)

# %% [markdown]
# ## Which differences are real?
# Every row against InfoDist (CE), run i against run i (the same seed: the same network
# initialisation and batch order where the sets have equal size). The interval resamples
# both the runs and the test images, so it holds both sources of noise; where it holds 0,
# the table cannot tell the two rows apart.

# %%
paired = comparisons.paired_differences(model_runs, up.bundle, reference="InfoDist (CE)")
for path in comparisons.write_paired(paired, "paired_differences", run_name):
    print("wrote", path.name)
display(Markdown(comparisons.paired_markdown(paired)))
fig = figures.paired_differences(paired)
plots.save(fig, "05_paired_differences", run_name)

# %% [markdown]
# ## Where the InfoDist classifier errs
# The confusion matrix of the paper's method (InfoDist, CE + contrastive), summed over its
# seeds on the test split, and every row's accuracy per class.

# %%
highlight = "InfoDist (CE + contrastive)"
chosen = model_runs[(model_runs["row"] == highlight) & (model_runs["network"] == confusion_network)]
matrix = tables.pooled_confusion(chosen, up.bundle)
fig = figures.confusion(matrix, up.bundle.class_names,
                           f"{highlight}, {figures.NETWORK_NAMES.get(confusion_network, confusion_network)}: "
                           f"test confusion over {len(chosen)} runs")
plots.save(fig, "05_infodist_confusion", run_name)

# %%
per_class = tables.per_class_accuracy(model_runs[model_runs["network"] == confusion_network], up.bundle)
fig = figures.per_class_accuracy(per_class, highlight)
plots.save(fig, "05_per_class_accuracy", run_name)
per_class.round(2)

# %% [markdown]
# ## What Distribution Matching learns, and what it leaks
# DM optimises pixels, not a selection: its images start as real train images and drift
# towards whatever matches the class's mean embedding. With few iterations they stay close
# to the real images they started from. The copy check below measures it: each set's
# distance to its nearest real train image, against the same distance for unseen real val
# images (notebook 03's memorisation check). Shareable data should have no image at or
# below val's 1st percentile.

# %%
dm_set = training_sets.from_dm(dm_artifacts[0])  # run 0's DM set
fig = plots.class_montage(dm_set.images, dm_set.labels, up.bundle.class_names,
                          per_class=min(dm_set.ipc, 10), seed=0,
                          title=f"Distribution Matching: {dm_set.ipc} learnt images per class "
                                f"({dm_cfg.iterations} iterations)")
plots.save(fig, "05_dm_images", run_name)

# %% [markdown]
# Has the matching converged? Its loss per iteration (run 0): the DM paper runs 20,000
# iterations; a shorter run says so in its row's name.

# %%
dm_losses = pd.read_csv(dm_artifacts[0].file("losses.csv"))
fig = figures.loss_curve(dm_losses, f"Distribution Matching: matching loss over {len(dm_losses):,} iterations")
plots.save(fig, "05_dm_loss", run_name)

# %%
copies = evaluation.copy_check(
    {"Distribution Matching": dm_set, "InfoDist": training_sets.from_selection(up.select(method="infodist"), up.pool),
     "Random real": training_sets.random_real(up.bundle, up.selection_cfg.ipc, down_cfg.seed)},
    up.bundle, judge.load_classifier(up.classifier))
plots.save_table(copies, "distilled_copy_check", run_name)
copies.round(3)

# %% [markdown]
# ## What you just saw
# The stage's key figures, read back from the files it wrote to `paper_results/<run>/`.

# %%
from histodistill.summary import what_you_saw

print(what_you_saw("05", run_name))
