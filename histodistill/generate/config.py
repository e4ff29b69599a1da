"""The generator's configurations (notebooks 02-03): autoencoder, denoiser, the pool's sampler
and the sweep that chooses the sampler on val."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..cache import ADDED_LATER


@dataclass(frozen=True)
class AutoencoderConfig:
    """The KL autoencoder whose latents the diffusion model learns.

    Either trained here on the real train split (`pretrained` None) or loaded from a
    diffusers folder or hub id (e.g. the Stable Diffusion VAE, for 64 px and above)."""

    pretrained: str | None = None  # diffusers folder or hub id; None: train one here
    # One entry per level; each level after the first halves the side, and at 28 px blurs the
    # fine texture that tells lymphocytes from debris, which no denoiser can put back: the
    # demo keeps one level (28x28x4 latents).
    block_out_channels: tuple[int, ...] = (16, 32)
    latent_channels: int = 4  # channels of the latent map
    steps: int = 1500  # optimisation steps
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # AdamW learning rate (cosine decay after a short warm-up)
    kl_weight: float = 1e-5  # weight of the KL term next to the L1 reconstruction loss
    # L1 alone reconstructs the conditional median, a blur, and caps the texture any denoiser
    # can produce; an L1 term on the Laplacian (the fine detail) makes the decoder keep it.
    edge_weight: float = 0.0  # weight of the L1 loss between Laplacians of reconstruction and image
    seed: int = 0  # seed of initialisation and batches
    shipped: bool = False  # load the autoencoder shipped with the package for exactly this configuration, if any (see shipped.py)

    def __post_init__(self) -> None:
        if self.shipped and self.pretrained:
            raise ValueError("give `pretrained` or `shipped`, not both")
        if self.steps < 1 or self.batch_size < 1 or not self.block_out_channels:
            raise ValueError("steps, batch_size and block_out_channels must be positive")
        if self.edge_weight < 0 or self.kl_weight < 0:
            raise ValueError("edge_weight and kl_weight must be >= 0")


PREDICTION_TYPES = ("epsilon", "v_prediction")
SPACES = ("latent", "pixel")


@dataclass(frozen=True)
class DiffusionConfig:
    """The class-conditional U-ViT denoiser, the space it denoises in, and how it is trained."""

    hidden_size: int = 96  # width of every transformer block
    depth: int = 5  # blocks (odd): shallow half, middle, deep half with long skips
    num_heads: int = 4  # attention heads
    patch_size: int = 2  # latent pixels per patch side (14x14 latents -> 49 tokens)
    steps: int = 3000  # optimisation steps
    batch_size: int = 64  # latents per step
    lr: float = 5e-4  # AdamW peak learning rate
    warmup_steps: int = 100  # linear warm-up, then cosine decay
    weight_decay: float = 0.03  # AdamW weight decay
    grad_clip: float = 1.0  # gradient-norm clipping
    label_dropout: float = 0.1  # share of labels replaced by the null class (classifier-free guidance)
    augment: bool = True  # also learn the 7 flipped/turned copies of every image (tissue has no orientation)
    ema_decay: float = 0.999  # exponential moving average of the weights
    num_train_timesteps: int = 1000  # diffusion steps of the DDPM noise schedule
    # Stable Diffusion's (and U-ViT's latent) schedule. A cosine schedule ends at alpha ~ 5e-5,
    # where DPM-Solver++'s data prediction amplifies the noise error ~20000x: samples blow up.
    beta_schedule: str = "scaled_linear"  # DDPM noise schedule: scaled_linear | linear | squaredcos_cap_v2
    beta_start: float = 0.00085  # first beta (linear schedules)
    beta_end: float = 0.012  # last beta (linear schedules)
    prediction_type: str = "epsilon"  # what the denoiser predicts: epsilon (the noise) | v_prediction (Salimans & Ho 2022)
    # Min-SNR-gamma loss weighting (Hang et al. 2023): caps the weight of the nearly clean
    # timesteps, whose easy targets otherwise dominate the gradient and slow convergence.
    snr_gamma: float | None = None  # None: plain MSE on every timestep; 5.0 is the paper's choice
    # "latent" is the paper's latent diffusion; "pixel" learns the images in [-1, 1] directly,
    # so nothing the autoencoder loses (texture, the cues that tell classes apart) is lost.
    space: str = field(default="latent", metadata=ADDED_LATER)  # what the denoiser learns: latent (the autoencoder's latents) | pixel (the images)
    bf16: bool = False  # bfloat16 autocast (slower than float32 on a 2-core CPU; for GPUs)
    checkpoint_every: int = 500  # steps between checkpoints (resume point)
    seed: int = 0  # seed of initialisation, noise and batches
    shipped: bool = False  # load the denoiser shipped with the package for exactly this configuration, if any (see shipped.py)

    def __post_init__(self) -> None:
        if self.depth % 2 == 0:
            raise ValueError("depth must be odd")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError("label_dropout must lie in [0, 1)")
        if self.steps < 1 or self.checkpoint_every < 1:
            raise ValueError("steps and checkpoint_every must be positive")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {self.prediction_type!r} is not one of {PREDICTION_TYPES}")
        if self.space not in SPACES:
            raise ValueError(f"space {self.space!r} is not one of {SPACES}")
        if self.snr_gamma is not None and self.snr_gamma <= 0:
            raise ValueError("snr_gamma must be positive (or None for no weighting)")


# The sampler's two forms of DPM-Solver++ (`sampling.dpm_solver`): the ODE (deterministic)
# and the SDE (fresh noise at every step).
SOLVERS = ("dpmsolver++", "sde-dpmsolver++")


@dataclass(frozen=True)
class SamplingConfig:
    """How the synthetic pool is drawn from the trained model (DPM-Solver++)."""

    per_class: int = 200  # pool images per class
    steps: int = 25  # DPM-Solver steps
    guidance_scale: float = 2.0  # classifier-free guidance; 1.0 means none
    batch_size: int = 256  # latents denoised at once
    seed: int = 0  # seed of the initial noise (and of the SDE's step noise): same seed, same pool
    solver: str = "dpmsolver++"  # "dpmsolver++" (ODE, deterministic) or "sde-dpmsolver++" (stochastic)
    # Guide only the steps whose noise level sigma = sqrt((1 - alpha_bar) / alpha_bar) lies in
    # (lo, hi]; the rest use the conditional prediction alone. None guides every step.
    guidance_interval: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.guidance_interval is not None:
            lo, hi = self.guidance_interval
            if not 0 <= lo < hi:
                raise ValueError(f"guidance_interval must be (lo, hi) with 0 <= lo < hi, not {self.guidance_interval}")
        if self.per_class < 1 or self.steps < 1 or self.batch_size < 1:
            raise ValueError("per_class, steps and batch_size must be positive")
        if self.guidance_scale < 0:
            raise ValueError("guidance_scale must be >= 0")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, not {self.solver!r}")


@dataclass(frozen=True)
class GuidanceSweepConfig:
    """The small pools that choose the sampler (guidance scale and solver) on real val
    (notebook 03, `generate/guidance.py`): one pool per scale and solver."""

    scales: tuple[float, ...] = (1.5, 2.0, 3.0, 4.0)  # guidance scales compared
    solvers: tuple[str, ...] = SOLVERS  # DPM-Solver++ forms compared at each scale
    per_class: int = 40  # images per class sampled at each scale
    seed: int = 1  # seed of their initial noise (the main pool's is another)

    def __post_init__(self) -> None:
        if not self.scales or min(self.scales) < 0:
            raise ValueError("scales must be a non-empty tuple of guidance scales >= 0")
        if not self.solvers or any(s not in SOLVERS for s in self.solvers):
            raise ValueError(f"solvers must be a non-empty tuple drawn from {SOLVERS}")
        if self.per_class < 2:
            raise ValueError("per_class must be at least 2 (Fréchet distance needs a covariance)")
