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
# - **Does:** audits the distilled set, the pool, DM's set and the generator for leaks, with controls.
# - **Reads:** notebook 01's data (train, val), 02's generator, 03's pool, 04's selection and `distilled/`,
#   05's recipe and Distribution Matching set (the profile's, when 05 has not run).
# - **Writes:** `paper_results/<run>/privacy_audit.csv/.md`, `privacy_audit_by_class.csv`, the `audit` section of
#   `distilled/data_card.json`; `figures/<run>/07_copy_ratios.png`, `07_distances.png`, `07_attacks.png`,
#   `07_closest_pairs.png`.
#
# The paper's promise is *safe* data sharing; this notebook tests it. Members are the real
# **train** images, the ones the generator learnt from; non-members are the real **val**
# images, which no audited model trained on (the classifiers trained here choose their
# checkpoint on pool images, and the generator never trained on val). The test split is not read.
#
# | test | question | passes when |
# | --- | --- | --- |
# | DCR share | is each image's nearest real image more often a train image than a holdout one? | share not significantly above n_train / (n_train + n_val), what unseen images give (one-sided binomial test) |
# | near-copies | are more images far closer to one train image than to the 50 around it than unseen real images of their class are? | the count under each class's threshold (the 1 % quantile of val's ratios) is not significantly above what val-like images give (exact test); Carlini et al.'s fixed 1/3 is reported beside it |
# | data-copying C_T (Meehan et al. 2020) | do the images sit closer to train than unseen real images do? | C_T not significantly below 0 |
# | MIA classifier | can a model trained on the set tell train from val images (loss, reference models)? | the AUC's 95 % interval holds 0.5 |
# | MIA generator | does the generator denoise train images better than val images? | likewise, at each noise level |
#
# The audited sets are notebook 04's distilled set, the whole pool and DM's set. Every test
# has controls on both sides:
# - **positive controls must fail**, to prove a test can see a leak: a random real train
#   subset of the same size (the reference: it *is* train data), train images with light
#   noise, the classifier trained on the real subset, a small denoiser overtrained on a few
#   train images;
# - **negative controls must pass**, to prove a test does not flag what is not a leak: val
#   images no model saw, audited exactly like a synthetic set of the distilled set's size and
#   class mix; the generator's attack with val images on both sides; and the run's own
#   selection applied to val, because keeping the most central images of a class biases any
#   set towards the real data. A test that a negative control fails is *uncalibrated* and does
#   not count in the verdict; the distilled set's DCR share and C_T are read against the
#   selected unseen images.
#
# A pass is evidence at the power these set sizes give, not a differential-privacy guarantee.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper | rehearsal: every parameter left as None takes this profile's value
run_name = None  # output folder under figures/ and paper_results/; None: the profile name
planted_noise = None  # std (0..255) of the noise on the planted train copies, the distance tests' control
reference_models = None  # classifiers on random pool subsets calibrating the reference-model attack (at least 2)
max_members = None  # train images the membership attacks score; more than this: a seeded random sample
config = {}  # other fields, "stage.field": value, e.g. {"privacy.seed": 1} (all: histodistill/*/config.py)

# %%
from IPython.display import Markdown, display

from histodistill import machine, parameters, paths, plots, run_record
from histodistill.evaluate import training_sets
from histodistill.privacy import audit, controls, figures, report

machine.configure_torch()  # a fixed thread count and deterministic kernels: a rerun repeats every digit
run_name = run_name or profile
up = run_record.load(run_name, profile)
down_cfg = run_record.upstream_or_preset(run_name, profile, "downstream")  # notebook 05's recipe: the audit's classifiers
dm_cfg = run_record.upstream_or_preset(run_name, profile, "dm")
privacy_cfg = parameters.configure("privacy", profile, globals())
run_record.record(run_name, profile, privacy=privacy_cfg)
privacy_cfg

# %% [markdown]
# ## The sets
# DM's set is run 0 of notebook 05's Distribution Matching row (read from the cache). The
# negative controls come from val; each leaves at least one val image of every class out, for
# the holdout it is compared with.

# %%
dm_artifact = training_sets.fit_dm(dm_cfg, up.bundle, up.selection_cfg.ipc)
sets = controls.audit_sets(up, dm_artifact, privacy_cfg)
for name, s in sets.items():
    print(f"{name}: {len(s.labels)} images ({s.role})")
print(controls.selection_note(sets["whole pool"].labels, up.bundle.splits["val"].labels, sets))

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
# The distilled set's DCR share and near-copies per class, in both spaces, with Carlini et
# al.'s fixed count beside the calibrated one. A class is *low-information* when unseen real
# images of it fall under Carlini's 1/3 more often than the calibrated quantile: near-uniform
# tiles (background) have a train tile of almost the same colour whatever they are. The
# per-class p-values are not corrected for nine classes; they locate evidence, the verdict is
# the whole-set test.

# %%
by_class[by_class["set"] == controls.DISTILLED].drop(columns=["set", "role"]).round(3)

# %% [markdown]
# ## Near-copies, judged against unseen real images
# Each image's copy ratio (its nearest train image's distance over the mean distance of its
# 50 nearest; 0 is an exact copy), per class: unseen val images in grey, the distilled set and
# the random unseen control in colour. The black bar is the class's calibrated threshold, the
# dashed line Carlini et al.'s fixed 1/3.

# %%
fig = figures.copy_ratios(curves, {name: sets[name].labels for name in (controls.DISTILLED, controls.RANDOM_UNSEEN)},
                          up.bundle.splits["val"].labels, by_class, up.bundle.class_names)
plots.save(fig, "07_copy_ratios", run_name)

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
# The distilled set passes when it passes every test that counts, in both spaces, and the
# generator passes its attack. A row does not count when a negative control fails the same
# test (uncalibrated), when its DCR share or C_T fails only as far as the same selection of
# unseen real images does, or when notebook 04's privacy filter removed exactly what it flags
# (near-copies in pixels). The positive controls must all be caught; one that passes means
# that test could not have seen the leak it is for. The verdict goes into the exported set's
# `data_card.json` (notebook 04's product), a failure included.

# %%
result = report.verdict(table, by_class)
print(report.verdict_text(result))
card = report.write_card(paths.results_dir(run_name) / "distilled", table, result)
print("audit written into", card)

# %% [markdown]
# ## What you just saw
# The stage's key figures, read back from the files it wrote to `paper_results/<run>/`.

# %%
from histodistill.summary import what_you_saw

print(what_you_saw("07", run_name))
