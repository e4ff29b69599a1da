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
# # 02 · Train the class-conditional latent diffusion model
#
# - **Does:** trains (or loads the shipped) KL autoencoder and class-conditional U-ViT denoiser on real train.
# - **Reads:** notebook 01's data (train to learn from, val to measure the autoencoder).
# - **Writes:** `paper_results/<run>/autoencoder_reconstruction.csv`, `autoencoder_texture.csv`, `ldm_training.csv`;
#   `figures/<run>/02_reconstructions.png`, `02_loss_curves.png`.
#
# InfoDist never shares a real image. It learns the real train split with a **latent
# diffusion model** and later shares only images sampled from it. Two parts:
#
# 1. A **KL autoencoder** (diffusers `AutoencoderKL`) maps each image to a latent map
#    (the demo: one level, 28 px → 28×28×4, which keeps the tissue's texture; every extra
#    level halves the side and, at 28 px, blurs). It is trained here on the real train
#    split, or loaded from a pretrained diffusers folder or hub id (`ae_pretrained`; e.g.
#    the Stable Diffusion VAE for 64 px and above, on a machine with internet).
# 2. A class-conditional **U-ViT** (the paper's denoiser) learns to remove noise from
#    those latents. Time and class are two extra tokens; shallow blocks feed deep ones
#    through long skips. A share of the labels is replaced by a *null class*
#    (`diffusion.label_dropout`), which is what classifier-free guidance needs at sampling time.
#
# Training checkpoints every `diffusion.checkpoint_every` steps. Interrupt the kernel at any
# moment and run the cell again: it resumes from the last checkpoint. Both stages are
# cached, so re-running with the same parameters loads the results instantly.
#
# **The demo loads a shipped generator.** Training the demo's pair takes about an hour on
# 2 CPU cores, so the package carries it (`histodistill/assets/generators/demo/`, made by
# `python -m histodistill.generate.ship build --profile demo`). It is loaded only when the data
# and every field of the two configurations equal those it was built for; change any of them, or set
# `use_shipped_generator = False`, and both train here from scratch.

# %% tags=["parameters"]
profile = "demo"  # smoke | demo | paper | rehearsal: every parameter left as None takes this profile's value
run_name = None  # output folder under figures/ and paper_results/; None: the profile name
use_shipped_generator = None  # True: load the generator shipped for exactly this configuration (demo); False: train from scratch
ae_pretrained = None  # diffusers folder or hub id of a pretrained AutoencoderKL; None trains one here
ae_steps = None  # autoencoder optimisation steps
ldm_steps = None  # denoiser optimisation steps
ldm_hidden_size = None  # U-ViT width
ldm_depth = None  # U-ViT blocks (odd)
processes = 1  # processes (GPUs) training the denoiser data-parallel under accelerate; 1: here, in this kernel
config = {}  # other fields, "stage.field": value, e.g. {"diffusion.lr": 3e-4} (all: histodistill/*/config.py)

# %%
from IPython.display import display

from histodistill import machine, parameters, plots, run_record
from histodistill.data import dataset
from histodistill.generate import autoencoder, figures, quality, stages

machine.configure_torch()  # a fixed thread count and deterministic kernels: a rerun repeats every digit
run_name = run_name or profile
bundle = dataset.prepare_data(run_record.upstream(run_name, profile, "data"))
ae_cfg = parameters.configure("autoencoder", profile, globals())
ldm_cfg = parameters.configure("diffusion", profile, globals())
run_record.record(run_name, profile, autoencoder=ae_cfg, diffusion=ldm_cfg)
display(ae_cfg, ldm_cfg)

# %% [markdown]
# ## The autoencoder
# Trained on the real train split (L1 reconstruction plus a weak KL term); the real train
# latents are encoded once and cached with it.

# %%
vae_artifact = stages.fit_autoencoder(ae_cfg, bundle)
vae = stages.load_autoencoder(vae_artifact)
latents = stages.load_latents(vae_artifact)
print(f"latents: {tuple(latents.shape)} (std {latents.std():.2f} after scaling)")

# %% [markdown]
# ### How much does the autoencoder lose?
# Real **val** images (never trained on) beside their reconstructions, and the error over
# the whole val split. The diffusion model can only be as sharp as this.

# %%
val = bundle.splits["val"]
recon = autoencoder.decode(vae, autoencoder.encode(vae, val.images))
error = stages.reconstruction_table(vae_artifact, ae_cfg)
plots.save_table(error.set_index("autoencoder"), "autoencoder_reconstruction", run_name)
display(error)
fig = figures.reconstructions(val.images, recon, val.labels, bundle.class_names,
                                title=f"Autoencoder: real val vs reconstruction (MAE {error['mae'].iloc[0]:.1f} / 255)")
plots.save(fig, "02_reconstructions", run_name)

# %% [markdown]
# Blur shows as lost texture: per class, the reconstructions' texture energy (mean
# absolute Laplacian of the grey image) and pixel std as a share of the val images' own.
# Whatever the autoencoder loses here, the synthetic pool cannot have (notebook 03).

# %%
ae_texture = (quality.texture_table(recon, val.labels, val.images, val.labels, bundle.class_names)
              .rename(columns=lambda c: c.replace("pool", "recon").replace("real", "val")))
plots.save_table(ae_texture.set_index("class"), "autoencoder_texture", run_name)
display(ae_texture.round(3))

# %% [markdown]
# ## The denoiser
# The U-ViT learns to predict the noise added to a latent at a random diffusion time
# (or, with `diffusion.prediction_type` = `"v_prediction"` as in the demo, the velocity, with
# min-SNR loss weighting). A progress bar shows the loss; the weights' moving average
# (EMA) is what gets saved.

# %%
ldm_artifact = stages.fit_diffusion(ldm_cfg, vae_artifact, bundle, processes=processes)

# %% [markdown]
# ## Training curves
# The autoencoder's losses and the denoiser's training loss per step (faint) with a
# running mean. The denoiser's loss stays well above 0 by nature:
# at high noise levels the noise cannot be predicted.

# %%
curves = {"autoencoder (L1, KL, Laplacian L1)": stages.history(vae_artifact),
          "U-ViT denoiser (weighted MSE)": stages.history(ldm_artifact)}
fig = figures.loss_curves(curves)
plots.save(fig, "02_loss_curves", run_name)
training = stages.training_summary(vae_artifact, ldm_artifact)
plots.save_table(training, "ldm_training", run_name)
training

# %% [markdown]
# ## The trained model, ready to share
# The whole model is saved as one diffusers pipeline (autoencoder, U-ViT, scheduler and
# class names, all in safetensors and JSON). It loads on its own, without this project's
# cache:
#
# ```python
# from histodistill.generate.pipeline import ClassConditionalLDMPipeline
# pipe = ClassConditionalLDMPipeline.from_pretrained(folder)
# images = pipe(["adipose"] * 8, guidance_scale=2.0, seed=0)   # uint8 (8, 28, 28, 3)
# ```

# %%
print("pipeline folder:", ldm_artifact.file("pipeline"))

# %% [markdown]
# ## What you just saw
# The stage's key figures, read back from the files it wrote to `paper_results/<run>/`.

# %%
from histodistill.summary import what_you_saw

print(what_you_saw("02", run_name))
