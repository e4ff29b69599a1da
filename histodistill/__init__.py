"""histodistill: a reproducible companion to InfoDist (Li & Kainz, MICCAI 2024),
image distillation for safe data sharing in histopathology.

Modules, one stage or concern each:
    config   each stage's configuration and the smoke/demo/paper presets
    cache    content-keyed, atomic artifact cache every expensive stage runs through
    sources  readers for bundled, full PathMNIST (medmnist), npz and folder data
    data     the data stage: checked, split, resized, cached; a medmnist-style Dataset
    plots    figures shared by the notebooks
    convnet  the ConvNet trained on real data: the pool's embedding network and judge
    autoencoder  the KL autoencoder of the latent diffusion model (diffusers AutoencoderKL)
    uvit     U-ViT, the class-conditional denoiser
    diffusion    resumable training of the latent diffusion model
    sampling DPM-Solver++ sampling with classifier-free guidance
    quality  Frechet distance, precision/recall and a memorisation check for a pool
    runner   runs the numbered notebooks with papermill (what run_all.sh calls)
"""

__version__ = "0.1.0"
