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
# # 04 · Select the distilled set: graph, Infomap communities, modular centrality
#
# - **Does:** keeps `ipc` pool images per class (InfoDist or a baseline) and exports them as the distilled set.
# - **Reads:** notebook 01's data (train and val, for the privacy filter), notebook 03's pool and judge ConvNet.
# - **Writes:** `paper_results/<run>/selection_graphs.csv` (graph methods), `selection_privacy_filter.csv` (with
#   `privacy_filter`), `distilled/` (`distilled.npz`, `grid_*.png`, `data_card.json`);
#   `figures/<run>/04_community_sizes.png`, `04_community_map.png` (graph methods), `04_distilled_set.png`.
#
# The heart of InfoDist. For every class of the synthetic pool from notebook 03:
#
# 1. **Embed** each image: the real-trained ConvNet's features (the paper's default), or a
#    10-D UMAP of the raw pixels (the paper's variant).
# 2. **Build a graph** over the class's images: `knn` (sparse, scales to 100k images),
#    `paper` (the released code's dense softmax graph, with its faults fixed: duplicates
#    cannot give inf/NaN, and a near-empty graph is refused with a remedy) or `umap`.
# 3. **Find communities** with Infomap (two-level, directed where the graph is, seeded).
# 4. **Keep `ipc` images per class**: each module gets an equal share (the remainder to the
#    modules with most flow); inside a module the images of highest *modular centrality*
#    (the map-equation centrality, as Infomap reports it) come first.
#
# Baselines run through the same interface (`select_method`): random, k-means
# nearest-to-centroid, UMAP + k-means, herding. The selected set is exported as a product:
# an `.npz` in MedMNIST layout, a PNG grid per class and a JSON data card.
#
# With `privacy_filter` on, the pool images that look like copies of real train images (the
# privacy audit's calibrated near-copy test, in pixels or in the ConvNet's features) are
# removed before step 2, so no method can pick them.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper | rehearsal: every parameter left as None takes this profile's value
run_name = None  # output folder under figures/ and paper_results/; None: the profile name
select_method = None  # infodist | random | kmeans | umap_kmeans | herding
ipc = None  # images kept per class
embedding = None  # convnet (the real-trained ConvNet's features) or umap (UMAP of raw pixels)
graph = None  # infodist: knn | paper | umap
rank = None  # infodist: centrality or flow, the order inside a module
privacy_filter = None  # True: remove the pool's near-copies of real train images first (thresholds from real val)
map_class = 0  # class id whose pool the community map shows
config = {}  # other fields, "stage.field": value, e.g. {"selection.k": 15} (all: histodistill/*/config.py)

# %%
from IPython.display import display

from histodistill import machine, parameters, paths, plots, run_record
from histodistill.generate import stages
from histodistill.select import distill, figures

machine.configure_torch()  # a fixed thread count and deterministic kernels: a rerun repeats every digit
run_name = run_name or profile
up = run_record.load(run_name, profile, with_selection=False)  # the pool and the real-trained ConvNet
bundle, pool_artifact, clf_artifact = up.bundle, up.pool, up.classifier
cfg = parameters.configure("selection", profile, globals())
run_record.record(run_name, profile, selection=cfg)
cfg

# %% [markdown]
# ## Select

# %%
selection_artifact = distill.distill(cfg, pool_artifact, clf_artifact, real_data=bundle.meta["source"], bundle=bundle)
indices, labels, nodes, graphs = distill.load_selection(selection_artifact)
pool_images, pool_labels, class_names = stages.load_pool(pool_artifact)
print(f"{len(indices)} of {len(pool_labels)} pool images kept ({cfg.ipc} per class, method {cfg.method})")

# %% [markdown]
# ## Privacy-aware selection
# With `privacy_filter` on, a pool image is removed before the graphs are built when it sits
# closer to one real train image, relative to its 50 nearest, than all but 1 % of the real
# val images of its class do: in raw pixels or in the real-trained ConvNet's features. Val
# sets the thresholds because no model trained on it; the test split stays out. Per class:
# the images each space flags, those removed (flagged in either) and those left to select from.

# %%
filtered = distill.load_privacy_filter(selection_artifact)
if filtered is not None:
    plots.save_table(filtered.set_index("class"), "selection_privacy_filter", run_name)
    display(filtered)
    print(f"{filtered['removed'].sum()} of {filtered['pool_images'].sum()} pool images removed")
else:
    print("privacy filter off: the selection saw the whole pool")

# %% [markdown]
# ## The graphs and their communities
# Per class: nodes, edges, isolated nodes and Infomap modules. A graph with many isolated
# nodes makes the selection arbitrary; the `paper` graph refuses to go on in that case.

# %%
if graphs is not None:
    plots.save_table(graphs.set_index("class"), "selection_graphs", run_name)
    display(graphs)
    fig = figures.community_sizes(nodes, class_names)
    plots.save(fig, "04_community_sizes", run_name)
else:
    print(f"{cfg.method} builds no graph")

# %% [markdown]
# ## One class's pool as a map
# A 2-D t-SNE of the class's embeddings, coloured by Infomap module; stars mark the
# images kept. A good selection covers every community.

# %%
if nodes is not None:
    features = distill.load_features(distill.embed_pool(cfg.embedding, pool_artifact, clf_artifact, cfg.seed))
    part = nodes[nodes["label"] == map_class]
    fig = figures.community_map(features[part["pool_index"]], part["module"].to_numpy(),
                                        part["selected"].to_numpy(),
                                        title=f"{class_names[map_class]}: {part['module'].nunique()} modules, "
                                              f"{int(part['selected'].sum())} selected")
    plots.save(fig, "04_community_map", run_name)

# %% [markdown]
# ## The distilled set
# This, and nothing else, is what would leave the hospital.

# %%
fig = plots.class_montage(pool_images[indices], labels, class_names, per_class=min(cfg.ipc, 10), seed=0,
                          title=f"The distilled set: {cfg.ipc} synthetic images per class ({cfg.method})")
plots.save(fig, "04_distilled_set", run_name)

# %% [markdown]
# ## Export
# `distilled.npz` (MedMNIST layout: load it as your own data with `data_source="npz"`),
# one PNG grid per class, and `data_card.json` (source, method, parameters, configuration
# hash, counts per class, date).

# %%
product = distill.copy_product(selection_artifact, paths.results_dir(run_name) / "distilled")
print("exported to", product)
print((product / "data_card.json").read_text())

# %% [markdown]
# ## What you just saw
# The stage's key figures, read back from the files it wrote to `paper_results/<run>/`.

# %%
from histodistill.summary import what_you_saw

print(what_you_saw("04", run_name))
