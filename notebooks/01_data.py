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
# # 01 · The real data
#
# - **Does:** loads the real labelled patches, checks them, splits them into train / val / test and resizes them.
# - **Reads:** the real images (`data_source`); no earlier notebook.
# - **Writes:** `paper_results/<run>/data_splits.csv`, `data_class_counts.csv`;
#   `figures/<run>/01_class_distribution.png`, `01_examples_per_class.png`, `01_colour_profile.png`.
#
# InfoDist starts from a real, labelled set of histology patches. Every later stage
# (the latent diffusion model, the embedding network, the downstream classifiers) is
# trained on this notebook's **train** split, chooses models on its **val** split, and
# touches its **test** split once, for the final numbers.
#
# Sources (`data_source`):
# - `bundled` (smoke and demo profiles): the first 1000 official PathMNIST train images,
#   shipped with the package. They have no val or test split, so both are carved out,
#   stratified by class and seeded: 600 train / 150 val / 250 test by default.
# - `pathmnist` (paper profile): full PathMNIST through `medmnist`, official splits
#   (89,996 / 10,004 / 7,180); the test split comes from another clinical centre.
# - `npz` / `folder`: your own images (see the README).
#
# The result is cached: running this notebook again with the same parameters loads it.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper | rehearsal: every parameter left as None takes this profile's value
run_name = None  # output folder under figures/ and paper_results/; None: the profile name
data_source = None  # "bundled" | "pathmnist" | "npz" | "folder"
data_path = None  # your .npz file or class-folder root; for pathmnist, the folder holding its .npz
image_size = None  # side in pixels every image is resized to (PathMNIST serves 28, 64, 128, 224)
max_train_per_class = None  # cap on train images per class (the smoke profile uses 20)
config = {}  # other fields, "stage.field": value, e.g. {"data.seed": 1} (all: histodistill/*/config.py)

# %%
from IPython.display import display

from histodistill import machine, parameters, plots, run_record
from histodistill.data import dataset, figures

machine.configure_torch()  # a fixed thread count and deterministic kernels: a rerun repeats every digit
run_name = run_name or profile
cfg = parameters.configure("data", profile, globals())
run_record.record(run_name, profile, data=cfg)  # later notebooks read the data configuration from here
cfg

# %% [markdown]
# ## Load, check, split, resize

# %%
bundle = dataset.prepare_data(cfg)
print(bundle.meta["source"])
summary = dataset.summary_table(bundle)
plots.save_table(summary, "data_splits", run_name)
summary

# %% [markdown]
# ## Classes per split
# A stratified split keeps each class's share the same in every split (right panel).

# %%
counts = dataset.class_counts(bundle)
plots.save_table(counts, "data_class_counts", run_name)
display(counts)
fig = figures.class_distribution(counts)
plots.save(fig, "01_class_distribution", run_name)

# %% [markdown]
# ## What the classes look like
# Ten random training images per class (seeded).

# %%
train = bundle.splits["train"]
fig = plots.class_montage(train.images, train.labels, bundle.class_names, per_class=10, seed=0,
                          title=f"Training images per class ({train.images.shape[1]} px)")
plots.save(fig, "01_examples_per_class", run_name)

# %% [markdown]
# ## Stain colour per class
# Mean image of each class and how each image's mean red, green and blue vary. Colour
# separates several tissue classes; a synthetic pool should keep these profiles.

# %%
fig = figures.colour_profile(train.images, train.labels, bundle.class_names)
plots.save(fig, "01_colour_profile", run_name)

# %% [markdown]
# ## What you just saw
# The stage's key figures, read back from the files it wrote to `paper_results/<run>/`.

# %%
from histodistill.summary import what_you_saw

print(what_you_saw("01", run_name))
