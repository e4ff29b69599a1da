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
# # 03 · Sample the synthetic pool and judge it
#
# - **Does:** trains the real-data judge ConvNet, chooses the sampler on val, samples the pool and checks it.
# - **Reads:** notebook 01's data (train and val) and notebook 02's autoencoder and denoiser.
# - **Writes:** `paper_results/<run>/guidance_sweep.csv`, `pool_class_consistency.csv`, `pool_quality.csv`,
#   `pool_texture.csv`, `pool_memorisation.csv`; `figures/<run>/03_guidance_sweep.png`, `03_real_vs_synthetic.png`,
#   `03_pool_montage.png`, `03_class_consistency.png`, `03_pool_quality.png`, `03_pool_texture.png`,
#   `03_memorisation.png`, `03_closest_pairs.png`.
#
# The model from notebook 02 draws a large **pool** of synthetic images per class
# (DPM-Solver++, classifier-free guidance). InfoDist later picks its small distilled set
# from this pool, so before going on we ask four questions, all offline and none on test
# data:
#
# 1. **Does each image show its class?** A ConvNet trained on the *real* train split
#    (the paper's embedding network, also used by notebook 04) classifies the pool. Its
#    accuracy on real val is the ceiling.
# 2. **Does the pool look like real data?** Fréchet distance and k-NN precision/recall
#    in that ConvNet's feature space, against real val, next to what real train scores
#    against real val (the floor two real samples reach).
# 3. **Does it hold real tissue's texture?** Fine structure (mean absolute Laplacian) and
#    contrast (pixel std) per class, as a share of real train's.
# 4. **Does it copy training images?** Each pool image's distance to its nearest real
#    train image, against the same distance for real val images, which the model never
#    saw.
#
# First, the sampler: a small pool per guidance scale and solver, scored on real val by the
# same judge, shows the trade-off and which setting a fixed rule picks.
#
# The pool is written as an `.npz` in MedMNIST layout (`train_images`, `train_labels`).

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper | rehearsal: every parameter left as None takes this profile's value
run_name = None  # output folder under figures/ and paper_results/; None: the profile name
pool_per_class = None  # synthetic images per class
sampling_steps = None  # DPM-Solver++ steps
guidance_scale = None  # classifier-free guidance; 1.0 means none, higher is more class-typical
solver = None  # "dpmsolver++" (deterministic ODE) or "sde-dpmsolver++" (fresh noise at every step)
sampler_from_val = False  # True: the pool takes the solver and guidance scale the sweep below picks on real val
clf_epochs = None  # passes of the real-trained ConvNet (the judge) over real train
processes = 1  # processes (GPUs) sharing the sampling under accelerate (same pool as 1); 1: here, in this kernel
config = {}  # other fields, "stage.field": value, e.g. {"sampling.seed": 1} (all: histodistill/*/config.py)

# %%
from IPython.display import display

from histodistill import machine, parameters, plots, run_record
from histodistill.classifiers import convnet, judge
from histodistill.data import dataset
from histodistill.generate import figures, guidance, memorisation, quality, stages

machine.configure_torch()  # a fixed thread count and deterministic kernels: a rerun repeats every digit
run_name = run_name or profile
bundle = dataset.prepare_data(run_record.upstream(run_name, profile, "data"))
vae_artifact = stages.fit_autoencoder(run_record.upstream(run_name, profile, "autoencoder"), bundle)
ldm_artifact = stages.fit_diffusion(run_record.upstream(run_name, profile, "diffusion"), vae_artifact, bundle)
sampling_cfg = parameters.configure("sampling", profile, globals())
clf_cfg = parameters.configure("classifier", profile, globals())
sweep_cfg = parameters.configure("guidance_sweep", profile, globals())
run_record.record(run_name, profile, classifier=clf_cfg, guidance_sweep=sweep_cfg)
display(sampling_cfg, clf_cfg, sweep_cfg)

# %% [markdown]
# ## The judge: a ConvNet trained on real images
# Width 128, instance norm, ReLU, average pooling; the epoch kept is the one with the best
# real **val** accuracy. Notebook 04 embeds the pool with this same network.

# %%
clf_artifact = judge.fit_classifier(clf_cfg, bundle)
classifier = judge.load_classifier(clf_artifact)
clf_history = stages.history(clf_artifact)
print(f"best real val accuracy {clf_history['val_acc'].max():.3f} (epoch {int(clf_history['val_acc'].idxmax()) + 1} of {len(clf_history)})")

# %% [markdown]
# ## Choosing the sampler on real val
# Guidance buys class identity at the price of diversity and texture; the SDE form of the
# solver, which adds fresh noise at every step, moves that trade-off. For each scale and
# solver below a small pool is sampled and scored against real **val** and real train,
# never test: class consistency (the judge's verdict), Fréchet distance to val next to
# what real train scores, precision/recall, texture. The rule: among the settings whose
# class consistency reaches the judge's own val accuracy, the one closest to val in
# Fréchet distance (else the most class-consistent). The profile's preset cites this curve;
# with `sampler_from_val = True` (what `./run_all.sh --distill` sets) the pool takes the pick.

# %%
real = guidance.judge_features(classifier, bundle)  # the judge's view of real train and val, used below too
sweep = guidance.sweep(ldm_artifact, sweep_cfg, classifier, bundle, sampling_cfg.steps, processes=processes,
                       real_features=real)
chosen = guidance.choose(sweep)
plots.save_table(sweep.set_index(["solver", "guidance_scale"]), "guidance_sweep", run_name)
display(sweep.round(3))
fig = figures.guidance_sweep(sweep, chosen)
plots.save(fig, "03_guidance_sweep", run_name)
if sampler_from_val:
    sampling_cfg = guidance.follow(chosen, sampling_cfg)
run_record.record(run_name, profile, sampling=sampling_cfg)  # what notebooks 04-07 read as this run's pool
print(guidance.verdict(chosen, sampling_cfg))

# %% [markdown]
# ## Sample the pool

# %%
pool_artifact = stages.sample_pool(sampling_cfg, ldm_artifact, processes=processes)
pool_images, pool_labels, class_names = stages.load_pool(pool_artifact)
print(f"pool: {pool_images.shape[0]} images ({sampling_cfg.per_class} per class) in {pool_artifact.file(stages.POOL_FILE)}")

# %% [markdown]
# Real training images (left) beside synthetic ones (right), drawn at random per class.

# %%
train, val = bundle.splits["train"], bundle.splits["val"]
fig = figures.real_vs_synthetic(train.images, train.labels, pool_images, pool_labels, class_names,
                                  title=f"Real vs synthetic ({sampling_cfg.solver}, guidance {sampling_cfg.guidance_scale:g}, "
                                        f"{sampling_cfg.steps} steps)")
plots.save(fig, "03_real_vs_synthetic", run_name)

# %% [markdown]
# A larger look at the pool, one row per class.

# %%
fig = plots.class_montage(pool_images, pool_labels, class_names, per_class=16, seed=1,
                          title="The synthetic pool: 16 random images per class")
plots.save(fig, "03_pool_montage", run_name)

# %% [markdown]
# ## 1 · Class consistency
# The share of each class's pool images that the real-trained ConvNet assigns to that
# class, next to its accuracy on real val images of the class.

# %%
pool_pred = convnet.predict(classifier, pool_images).argmax(1)
val_pred = convnet.predict(classifier, val.images).argmax(1)
consistency, confusion = quality.class_consistency(pool_pred, pool_labels, val_pred, val.labels, class_names)
plots.save_table(consistency.set_index("class"), "pool_class_consistency", run_name)
display(consistency.round(3))
fig = figures.class_consistency(consistency, confusion)
plots.save(fig, "03_class_consistency", run_name)

# %% [markdown]
# ## 2 · Fidelity: Fréchet distance and precision/recall
# In the ConvNet's feature space, against real val. Pool and train are cut to the same
# size per class before measuring, since both metrics depend on the sample size. The
# per-class numbers rest on few val images in the small profiles: read them as rough.

# %%
train_feats, val_feats = real["train"], real["val"]
pool_feats = convnet.embed(classifier, pool_images)
fidelity = quality.quality_table(train_feats, train.labels, val_feats, val.labels, pool_feats, pool_labels, class_names)
plots.save_table(fidelity.set_index("class"), "pool_quality", run_name)
display(fidelity.round(3))
fig = figures.pool_quality(fidelity)
plots.save(fig, "03_pool_quality", run_name)

# %% [markdown]
# ## 3 · Texture
# Does the pool hold real tissue's fine structure, or flat colour? Per class, the mean
# absolute Laplacian of the grey image (texture energy) and the per-image pixel standard
# deviation, each as a share of real train's. Flat squares score near 0, speckle above 1.

# %%
texture = quality.texture_table(pool_images, pool_labels, train.images, train.labels, class_names)
plots.save_table(texture.set_index("class"), "pool_texture", run_name)
display(texture.round(3))
fig = figures.texture(texture)
plots.save(fig, "03_pool_texture", run_name)

# %% [markdown]
# ## 4 · Memorisation: does the pool copy training images?
# For every pool image, the distance to its nearest real train image, in feature space
# and in pixels; the same for real val images gives the distribution of "similar but not
# copied". Pool images below val's 1st percentile deserve a look before anything is shared.

# %%
mem = memorisation.memorisation(pool_feats, train_feats, val_feats, pool_images, train.images, val.images,
                           val_distances=real["val_to_train"])
summary = memorisation.memorisation_summary(mem, pool_labels, class_names)
plots.save_table(summary.set_index("space"), "pool_memorisation", run_name)
display(summary.round(4))
fig = figures.memorisation(mem)
plots.save(fig, "03_memorisation", run_name)

# %% [markdown]
# The eight closest synthetic/real pairs in pixel space: a copy would look identical.

# %%
pairs = memorisation.closest_pairs(mem, "pixels", n=8)
fig = figures.closest_pairs(pairs, pool_images, train.images, title="Closest synthetic / real train pairs (pixels)")
plots.save(fig, "03_closest_pairs", run_name)

# %% [markdown]
# ## What you just saw
# The stage's key figures, read back from the files it wrote to `paper_results/<run>/`.

# %%
from histodistill.summary import what_you_saw

print(what_you_saw("03", run_name))
