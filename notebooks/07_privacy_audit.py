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
# # 07 · Is the distilled set safe to share? A privacy audit
#
# The paper's promise is *safe* data sharing; this notebook tests it. Members are the real
# **train** images, the ones the generator learnt from; non-members are the real **val**
# images, which no audited model saw (the classifiers trained here choose their checkpoint
# on pool images, and the generator never trained on val). The test split is not read.
#
# | test | question | passes when |
# | --- | --- | --- |
# | DCR share | is each image's nearest real image more often a train image than a holdout one? | share not significantly above n_train / (n_train + n_val), what unseen images give (one-sided binomial test) |
# | near-copies (Carlini et al. 2023) | is an image far closer to one train image than to the 50 around it? | none below 1/3 |
# | data-copying C_T (Meehan et al. 2020) | do the images sit closer to train than unseen real images do? | C_T not significantly below 0 |
# | MIA classifier | can a model trained on the set tell train from val images (loss, reference models)? | the AUC's 95 % interval holds 0.5 |
# | MIA generator | does the generator denoise train images better than val images? | likewise, at each noise level |
#
# The audited sets are notebook 04's distilled set, the whole pool and DM's set. Two must
# fail, to prove the tests can: a random real subset of the same size (the reference: it
# *is* train data) and train images with light noise (the control). The attacks have their
# controls too: the classifier trained on the real subset, and a small denoiser overtrained
# on a few train images. A pass is evidence at the power these set sizes give, not a
# differential-privacy guarantee.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper | rehearsal: every parameter left as None takes this profile's value
run_name = None  # output folder under figures/ and paper_results/; None: the profile name
planted_noise = None  # std (0..255) of the noise on the planted train copies, the distance tests' control
neighbours = None  # train images whose mean distance scales a near-copy's (Carlini et al.: 50)
near_copy_threshold = None  # nearest / mean-of-neighbours below this flags a near-copy (Carlini et al.: 1/3)
cells = None  # k-means cells of the data-copying test C_T
reference_models = None  # classifiers on random pool subsets calibrating the reference-model attack (at least 2)
selection_images = None  # pool images the audit's classifiers choose their checkpoint on (val stays unseen)
max_members = None  # train images the membership attacks score; more than this: a seeded random sample
timesteps = None  # noise levels of the generator attack, e.g. (50, 100, 200, 400)
draws = None  # noise draws averaged per image and noise level
control_per_class = None  # train images per class the control denoiser is overtrained on
control_steps = None  # training steps of the control denoiser
control_hidden_size = None  # width of the control denoiser
control_depth = None  # blocks of the control denoiser (odd)
n_boot = None  # bootstrap resamples of each attack's AUC interval
audit_seed = None  # seed of subsets, noise, features and bootstraps

# %%
from IPython.display import Markdown, display

from histodistill import machine, paths, plots, presets, runs
from histodistill.evaluate import evaluation
from histodistill.privacy import audit, figures, report

machine.configure_torch()  # a fixed thread count and deterministic kernels: a rerun repeats every digit
run_name = run_name or profile
up = runs.load(run_name, profile)
down_cfg = runs.upstream(run_name, profile, "downstream")  # notebook 05's recipe: the audit's classifiers
dm_cfg = runs.upstream(run_name, profile, "dm")
privacy_cfg = presets.stage_config(
    "privacy",
    profile,
    planted_noise=planted_noise,
    neighbours=neighbours,
    near_copy_threshold=near_copy_threshold,
    cells=cells,
    reference_models=reference_models,
    selection_images=selection_images,
    max_members=max_members,
    timesteps=tuple(timesteps) if timesteps else None,
    draws=draws,
    control_per_class=control_per_class,
    control_steps=control_steps,
    control_hidden_size=control_hidden_size,
    control_depth=control_depth,
    n_boot=n_boot,
    seed=audit_seed,
)
runs.record(run_name, profile, privacy=privacy_cfg)
privacy_cfg

# %% [markdown]
# ## The sets
# DM's set is run 0 of notebook 05's Distribution Matching row (read from the cache).

# %%
dm_artifact = evaluation.distribution_matching(dm_cfg, up.bundle, up.selection_cfg.ipc)
sets = audit.audit_sets(up, dm_artifact, privacy_cfg)
for name, s in sets.items():
    print(f"{name}: {len(s.labels)} images ({s.role})")

# %% [markdown]
# ## The battery
# Distances are Euclidean, in pixels and in the features of a randomly initialised ConvNet:
# the real-trained judge of notebook 03 learnt from the train split, so it would place train
# images nearer each other than val images and bias every train-vs-holdout distance; a random
# network saw nothing. One row per test, set and space.

# %%
audit_artifact = audit.run_audit(privacy_cfg, up, sets, down_cfg)
table, by_class = audit.load_table(audit_artifact), audit.load_by_class(audit_artifact)
curves = audit.load_curves(audit_artifact)
report.save(table, run_name, by_class)  # paper_results/<run>/privacy_audit.csv, .md and _by_class.csv
display(Markdown(report.markdown(table)))

# %% [markdown]
# ## Where the distance tests' evidence sits
# The distilled set's DCR share and near-copies per class, in both spaces. A failure carried
# by one class reads differently from one spread over the set: near-uniform images
# (background squares) have close neighbours in any sample. The per-class p-values are not
# corrected for nine classes; they locate evidence, the verdict is the whole-set test.

# %%
by_class[by_class["set"] == "distilled (InfoDist)"].drop(columns=["set", "role"]).round(3)

# %% [markdown]
# ## What the distances look like
# Each set's distance to its nearest train image, against the same distance for unseen val
# images: a set drawn from the data distribution without copying sits where val sits; the
# planted copies and the real subset sit at or near zero.

# %%
fig = figures.distances(curves, {name: s.role for name, s in sets.items()}, space="pixels")
plots.save(fig, "07_distances", run_name)

# %% [markdown]
# ## The attacks and their controls
# ROC curves of each membership attack; a curve on the diagonal is an attack that cannot
# tell members from non-members. Each panel holds the attack's control, which must bend away.

# %%
fig = figures.attacks(table, curves)
plots.save(fig, "07_attacks", run_name)

# %% [markdown]
# ## The closest pairs
# The distilled set's images nearest to a train image (pixels), beside that train image, and
# the same for the planted copies: distinct images in the first row, copies in the second.

# %%
fig = figures.closest_pairs(sets, up.bundle.splits["train"].images, curves)
plots.save(fig, "07_closest_pairs", run_name)

# %% [markdown]
# ## The verdict, written into the data card
# The distilled set passes when it passes every test, in both spaces, and the generator
# passes its attack. The controls must all be caught; a control that passes means that test
# could not have seen the leak it is for. The verdict goes into the exported set's
# `data_card.json` (notebook 04's product), a failure included.

# %%
result = report.verdict(table, by_class)
print(report.verdict_text(result))
card = report.write_card(paths.results_dir(run_name) / "distilled", table, result)
print("audit written into", card)
