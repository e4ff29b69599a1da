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
# # 06 · Ablations: which part of InfoDist matters?
#
# - **Does:** changes one part of InfoDist at a time and compares the variants on test, with the val side beside.
# - **Reads:** notebooks 01-04's data, pool, judge and selection, and notebook 05's training recipe and models.
# - **Writes:** per chosen ablation `paper_results/<run>/ablation_<name>.csv/.md/.tex`,
#   `ablation_<name>_paired.csv/.md`, `ablation_<name>_val.csv`; `figures/<run>/06_ablation_<name>.png`.
#
# Each section changes one thing and keeps the rest as in notebook 05's "InfoDist (CE)"
# row: notebook 04's selection, cross-entropy, the recipe notebook 05 recorded. Every
# model and every selection is a cached stage, so:
#
# - a variant equal to one in notebook 05 (InfoDist with the knn graph, k-means, random,
#   the contrastive row, random real at the same IPC) is read back, not retrained;
# - editing one list below (say, adding a guidance scale) trains only the new variants.
#
# Each ablation writes `paper_results/<run>/ablation_<name>.csv/.md/.tex` and
# `figures/<run>/06_ablation_<name>.png`; one with a reference variant also its paired
# differences on test (`ablation_<name>_paired.csv/.md`, with 95 % intervals) and the same
# comparisons on val (`ablation_<name>_val.csv`), the side a default may be chosen on.
# Variants the data cannot support (an IPC above the smallest class, a pool size above the
# pool) are skipped with a note.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper | rehearsal: every parameter left as None takes this profile's value
run_name = None  # output folder under figures/ and paper_results/; None: the profile name
ablations = None  # names to run, e.g. ("ipc", "guidance"); None: contrastive, selection, rank, ipc, pool_size, guidance, privacy_filter
ablation_network = None  # the network every ablation trains: convnet | resnet18
ablation_seeds = None  # training runs per variant
ipcs = None  # images per class compared, e.g. (1, 10, 50, 100)
config = {}  # other fields, "stage.field": value, e.g. {"ablation.guidance_scales": (1.0, 3.0)} (all: histodistill/*/config.py)

# %%
from IPython.display import Markdown, display

from histodistill import machine, parameters, run_record
from histodistill.evaluate import ablations as ablation_lib
from histodistill.evaluate import comparisons, tables

machine.configure_torch()  # a fixed thread count and deterministic kernels: a rerun repeats every digit
run_name = run_name or profile
up = run_record.load(run_name, profile)
down_cfg = run_record.upstream(run_name, profile, "downstream")  # notebook 05's recipe
abl_cfg = parameters.configure("ablation", profile, globals())
run_record.record(run_name, profile, ablation=abl_cfg)
chosen = tuple(ablations) if ablations else ablation_lib.NAMES
unknown = sorted(set(chosen) - set(ablation_lib.NAMES))
if unknown:
    raise ValueError(f"unknown ablations {unknown}; choose from {ablation_lib.NAMES}")
abl_cfg

# %% [markdown]
# Every chosen ablation's training sets are built first (selections, the guidance pools),
# then all their models are queued in the workers at once; each table below waits for its own.

# %%
print(f"{ablation_lib.start(chosen, up, down_cfg, abl_cfg)} models queued in the workers")


# %%
def show(name: str) -> None:
    """Run one ablation, save its table and figure, and show them."""
    if name not in chosen:
        print(f"{name}: not chosen in `ablations`")
        return
    result = ablation_lib.run(name, up, down_cfg, abl_cfg)
    ablation_lib.save(result, run_name)
    for note in result.notes:
        print("note:", note)
    display(Markdown(tables.display_table(result.summary, index="variant").to_markdown() + "\n\n"
                     + tables.table_note(result.summary)))
    if result.paired is not None and len(result.paired):
        # Each variant against its reference, paired by seed, with a 95 % interval.
        display(Markdown(comparisons.paired_markdown(result.paired, by="variant")))
        # The same comparisons on val (the kept checkpoints' AUC, run by run): a default is chosen here.
        display(ablation_lib.val_differences(result).round(4))


# %% [markdown]
# ## Contrastive term
# Cross-entropy alone against CE + SupCon (on features) and CE + the released code's
# boundary-guided semi-push-pull loss (on class scores, softmax applied once), at several
# weights. The paper's claim is that the contrastive term helps on a small synthetic set.

# %%
show("contrastive")

# %% [markdown]
# ## Selection method
# The same pool and IPC, picked by random choice, k-means (nearest image to each centroid),
# herding, or InfoDist on three graphs: `knn` (the default), `paper` (the released code's
# dense softmax graph, with the automatic distance scale) and `umap` (UMAP's fuzzy graph).

# %%
show("selection")

# %% [markdown]
# ## Modular centrality or flow
# Inside a module, InfoDist keeps the images of highest modular centrality. The released
# code never sorted by it: it kept the order Infomap returned, which is flow order with
# infomap 2.7 and file order with 2.9 (and from 2.15 the code no longer runs). `flow` here is
# that 2.7 behaviour. Centrality rises with flow for most nodes, so the two often pick the
# same images: the note says how many.

# %%
show("rank")

# %% [markdown]
# ## Images per class
# InfoDist against random real images as the distilled set grows (the paper reports IPC
# 1, 10, 50). A real IPC above the smallest real class is skipped.

# %%
show("ipc")

# %% [markdown]
# ## Pool size
# InfoDist selecting from the first n pool images of every class: does a larger pool give a
# better selection at the same IPC?

# %%
show("pool_size")

# %% [markdown]
# ## Guidance scale
# Stronger classifier-free guidance makes samples more typical of their class (higher class
# consistency, judged by the real-trained ConvNet) and less diverse. Each scale gets a
# fresh pool, so this is the slowest ablation on a CPU. This table reports test accuracy
# and therefore sets nothing: the pool's guidance scale is chosen on real val in
# notebook 03 (`guidance_sweep.csv`).

# %%
show("guidance")

# %% [markdown]
# ## Privacy-aware selection
# InfoDist on the whole pool ("filter off") against InfoDist on the pool less every image
# the calibrated near-copy test flags as a copy of a real train image, in pixels or in the
# real-trained ConvNet's features, with thresholds from real val ("filter on", notebook 04's
# `privacy_filter`). This measures what the filter costs in downstream accuracy; whether it
# makes the set safer is notebook 07's question. With notebook 04 run without the filter,
# "filter off" is the main table's InfoDist (CE), read back from the cache. Whether the filter
# is on by default is chosen on val, never on these test numbers: the last table gives the
# val AUC of the checkpoint each run kept, run by run against the filter off.

# %%
show("privacy_filter")

# %% [markdown]
# ## What you just saw
# The stage's key figures, read back from the files it wrote to `paper_results/<run>/`.

# %%
from histodistill.summary import what_you_saw

print(what_you_saw("06", run_name))
