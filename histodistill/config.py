"""Every stage's configuration: one frozen dataclass per stage, checked when it is made.

A configuration is hashed into its stage's cache key (see `cache.py`), so two runs with
equal configurations share one result; an ablation is the same stage with other fields.
Each profile's values for every stage live in `presets.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

# "rehearsal": a stand-in file of full PathMNIST's layout and sizes built from the bundled
# images (`data/rehearsal.py`), written into the cache on first use. Not data.
DATA_SOURCES = ("bundled", "pathmnist", "npz", "folder", "rehearsal")
# Sizes medmnist serves PathMNIST at; other sizes are resized from the nearest one.
PATHMNIST_SIZES = (28, 64, 128, 224)


@dataclass(frozen=True)
class DataConfig:
    """Where the real images come from and how they are split and sized."""

    source: str = "bundled"  # bundled | pathmnist | npz | folder
    path: str | None = None  # npz file or class-folder root (own data); data root (pathmnist)
    size: int = 28  # side in pixels every image is resized to
    download: bool = True  # pathmnist: fetch the file from medmnist's servers when missing
    val_fraction: float = 0.15  # share of all images carved out for validation, if none given
    test_fraction: float = 0.25  # share of all images carved out for testing, if none given
    max_train_per_class: int | None = None  # cap on train images per class (None: all)
    seed: int = 0  # seed of every carved split and cap

    def __post_init__(self) -> None:
        if self.source not in DATA_SOURCES:
            raise ValueError(f"data source {self.source!r} is not one of {DATA_SOURCES}")
        if self.source in ("npz", "folder") and not self.path:
            raise ValueError(f"data source {self.source!r} needs `path` (the file or folder)")
        if not 8 <= self.size <= 1024:
            raise ValueError(f"image size {self.size} is outside 8..1024 pixels")
        for name in ("val_fraction", "test_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie strictly between 0 and 1")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave images for training")
        if self.max_train_per_class is not None and self.max_train_per_class < 1:
            raise ValueError("max_train_per_class must be at least 1 (or None for all)")


@dataclass(frozen=True)
class ClassifierConfig:
    """The ConvNet trained on real train images: the pool's embedding network and judge.

    The paper's embedding network: width 128, instance norm, ReLU, 2x2 average pooling
    after every block; its feature is the flattened output of the last block."""

    width: int = 128  # channels of every convolution block
    depth: int | None = None  # blocks; None: chosen from the image size (3 at 28-32 px)
    epochs: int = 40  # passes over the real train split
    batch_size: int = 128  # images per step
    lr: float = 0.01  # peak SGD learning rate (cosine decay to 0)
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay
    augment: bool = True  # random flips and 90-degree rotations (tissue has no orientation)
    seed: int = 0  # seed of initialisation, shuffling and augmentation

    def __post_init__(self) -> None:
        if self.width < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("width, epochs and batch_size must be positive")
        if self.depth is not None and self.depth < 1:
            raise ValueError("depth must be at least 1 (or None for automatic)")


@dataclass(frozen=True)
class AutoencoderConfig:
    """The KL autoencoder whose latents the diffusion model learns.

    Either trained here on the real train split (`pretrained` None) or loaded from a
    diffusers folder or hub id (e.g. the Stable Diffusion VAE, for 64 px and above)."""

    pretrained: str | None = None  # diffusers folder or hub id; None: train one here
    # One entry per level; each level after the first halves the side. Two levels give
    # 14x14x4 latents at 28 px: three (7x7x4) lost the fine texture that tells lymphocytes
    # from debris, and no denoiser can put back what the autoencoder drops. Even two kept
    # only 0.66 of real val's texture energy on the demo; one level (28x28x4, the demo
    # preset) keeps 1.00 (README, "The generative model").
    block_out_channels: tuple[int, ...] = (16, 32)
    latent_channels: int = 4  # channels of the latent map
    steps: int = 1500  # optimisation steps
    batch_size: int = 32  # images per step
    lr: float = 1e-3  # AdamW learning rate (cosine decay after a short warm-up)
    kl_weight: float = 1e-5  # weight of the KL term next to the L1 reconstruction loss
    # L1 alone reconstructs the conditional median, a blur: on the demo its reconstructions
    # kept 0.66 of real val's texture energy, a ceiling no denoiser can rise above. An L1
    # term on the Laplacian (the fine detail) of the reconstruction makes the decoder keep it.
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


@dataclass(frozen=True)
class DiffusionConfig:
    """The class-conditional U-ViT denoiser and how it is trained."""

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
    bf16: bool = False  # bfloat16 autocast; on the 2-core CPU it made U-ViT steps slower (0.63 vs 0.58 s)
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


SELECTION_METHODS = ("infodist", "random", "kmeans", "umap_kmeans", "herding")


@dataclass(frozen=True)
class SelectionConfig:
    """How the distilled set is picked from the pool (notebook 04)."""

    method: str = "infodist"  # infodist | random | kmeans | umap_kmeans | herding
    ipc: int = 10  # images kept per class
    embedding: str = "convnet"  # convnet: the real-trained ConvNet's features; umap: UMAP of raw pixels
    graph: str = "knn"  # infodist: knn (sparse, scales) | paper (the released code's) | umap
    rank: str = "centrality"  # infodist: order inside a module, modular centrality or flow
    k: int = 10  # knn graph: neighbours per image
    # The released code's scale is 1.0: its rows are nearly uniform (one module per class at
    # ~200 images) and from ~1000 images per class the graph is empty (refused); use knn.
    distance_scale: float = 1.0  # paper graph: inverse temperature of its softmax over 1/distance
    trials: int = 5  # Infomap trials (the best is kept)
    seed: int = 0  # seed of Infomap, k-means, UMAP and random selection
    # Drop every pool image the calibrated near-copy test flags (in pixels or in the judge's
    # features, thresholds from real val) before any graph is built (`select/privacy_filter.py`).
    privacy_filter: bool = False

    def __post_init__(self) -> None:
        if self.method not in SELECTION_METHODS:
            raise ValueError(f"selection method {self.method!r} is not one of {SELECTION_METHODS}")
        if self.embedding not in ("convnet", "umap"):
            raise ValueError("embedding must be 'convnet' or 'umap'")
        if self.graph not in ("knn", "paper", "umap"):
            raise ValueError("graph must be 'knn', 'paper' or 'umap'")
        if self.rank not in ("centrality", "flow"):
            raise ValueError("rank must be 'centrality' or 'flow'")
        if self.ipc < 1 or self.k < 1 or self.trials < 1:
            raise ValueError("ipc, k and trials must be positive")
        if isinstance(self.distance_scale, bool) or not isinstance(self.distance_scale, (int, float)) \
                or not self.distance_scale > 0:
            raise ValueError(f"distance_scale must be a positive number, not {self.distance_scale!r}")


NETWORKS = ("convnet", "resnet18")
# Contrastive terms next to cross-entropy (losses.combined_loss): "supcon" is the reference
# SupCon (two augmented views, projection head), "supcon_1view" the single-view form on the
# network's features, "push_pull" the released code's semi-push-pull on class scores.
CONTRASTIVE = ("none", "supcon", "supcon_1view", "push_pull")


@dataclass(frozen=True)
class DownstreamConfig:
    """How one downstream classifier is trained on a (distilled) training set (METHOD step 7).

    Training is budgeted in optimisation steps, one budget for every training set (a
    distilled set of 90 images and the full real train set alike), so no row gets more
    training than another. The budget is chosen on val where the val accuracy has plateaued
    (`budget.choose`, notebook 05). The paper: 1000 epochs of an IPC-100 set (900 images,
    batch 256: 4000 steps), lr 1e-3, warm-up 500 epochs, full-width networks. A CPU profile
    trains narrower networks at a higher learning rate."""

    network: str = "convnet"  # convnet | resnet18
    width_scale: float = 1.0  # channels x this; 1 = the paper's widths (ConvNet 128, ResNet-18 64..512)
    steps: int = 600  # optimisation steps, whatever the set's size (a distilled set often fits in one batch)
    batch_size: int = 256  # images per step
    lr: float = 0.01  # peak SGD learning rate
    momentum: float = 0.9  # SGD momentum
    weight_decay: float = 5e-4  # SGD weight decay
    warmup_fraction: float = 0.5  # share of the steps warming up linearly, then cosine decay (paper: 500 of 1000)
    ema_decay: float = 0.995  # weight EMA (warm-up as diffusers'); the EMA weights are evaluated and kept
    dsa: bool = True  # differentiable Siamese augmentation, one family per batch
    contrastive: str = "none"  # none | supcon (two views, projection head) | supcon_1view | push_pull (released code's)
    contrastive_weight: float = 0.1  # weight of the contrastive term next to cross-entropy
    eval_every: int = 10  # steps between val evaluations (the last step is always evaluated)
    seed: int = 0  # seed of initialisation, batches and augmentation

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"network {self.network!r} is not one of {NETWORKS}")
        if self.contrastive not in CONTRASTIVE:
            raise ValueError(f"contrastive {self.contrastive!r} is not one of {CONTRASTIVE}")
        if self.steps < 1 or self.batch_size < 1 or self.eval_every < 1 or self.width_scale <= 0:
            raise ValueError("steps, batch_size, eval_every and width_scale must be positive")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError("warmup_fraction must lie in [0, 1)")


@dataclass(frozen=True)
class EvaluationConfig:
    """What the main table trains (notebook 05): which networks, how many runs per row."""

    networks: tuple[str, ...] = NETWORKS  # downstream networks, one column group each
    seeds: int = 5  # training runs per row and network (seeds seed..seed+seeds-1)
    contrastive: str = "supcon"  # the term of the "InfoDist (CE + contrastive)" row: supcon | supcon_1view | push_pull
    # The training budget is checked on val (`budget.curve`): InfoDist (CE) trained at each
    # of these step counts; the rule picks the smallest after which val accuracy stops rising.
    budget_steps: tuple[int, ...] = (150, 300, 600, 1200)  # step budgets compared on val (ascending)
    budget_seeds: int = 3  # runs per budget and network (runs 0.. of the main table's InfoDist (CE))
    budget_tolerance: float = 0.02  # val accuracy a longer budget must add to count as still rising

    def __post_init__(self) -> None:
        unknown = [n for n in self.networks if n not in NETWORKS]
        if unknown or not self.networks:
            raise ValueError(f"networks must be a non-empty tuple of {NETWORKS} (got {self.networks})")
        if self.seeds < 1 or self.budget_seeds < 1 or self.budget_tolerance < 0:
            raise ValueError("seeds and budget_seeds must be positive, budget_tolerance not negative")
        if not self.budget_steps or min(self.budget_steps) < 1 or list(self.budget_steps) != sorted(set(self.budget_steps)):
            raise ValueError(f"budget_steps must be distinct positive step counts in ascending order, not {self.budget_steps}")
        if self.contrastive not in CONTRASTIVE[1:]:
            raise ValueError(f"contrastive must be one of {CONTRASTIVE[1:]}")


@dataclass(frozen=True)
class DMConfig:
    """Distribution Matching (Zhao & Bilen, WACV 2023), distilled from the real train set at
    the selection's IPC: the classic, non-human-readable baseline."""

    iterations: int = 20000  # matching steps, each under a fresh random ConvNet (the DM paper: 20000)
    lr_img: float = 1.0  # SGD learning rate on the synthetic pixels (momentum 0.5)
    batch_real: int = 256  # real images per class and step
    embed_width: int = 128  # width of the random ConvNets that embed
    init: str = "real"  # real (random real images) | noise
    dsa: bool = True  # Siamese augmentation of real and synthetic batches alike
    seed: int = 0  # seed of the initial images, the embedders and the real batches

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.batch_real < 1 or self.embed_width < 1 or self.lr_img <= 0:
            raise ValueError("need iterations >= 0 and positive batch_real, embed_width and lr_img")
        if self.init not in ("real", "noise"):
            raise ValueError("init must be 'real' or 'noise'")


@dataclass(frozen=True)
class AblationConfig:
    """What notebook 06 varies; every variant not listed reuses the main table's settings
    (and its cached models where they coincide)."""

    network: str = "convnet"  # the network every ablation trains
    seeds: int = 3  # training runs per variant
    contrastive_kinds: tuple[str, ...] = CONTRASTIVE[1:]  # contrastive terms compared with CE alone
    contrastive_weights: tuple[float, ...] = (0.03, 0.1, 0.3)  # weights of each contrastive term
    methods: tuple[str, ...] = ("random", "kmeans", "herding", "infodist:paper", "infodist:knn", "infodist:umap")  # selections compared
    ipcs: tuple[int, ...] = (1, 10, 50, 100)  # images per class compared (those the pool and data allow)
    pool_sizes: tuple[int, ...] = (25, 50, 100, 200)  # pool images per class InfoDist selects from (subsets)
    guidance_scales: tuple[float, ...] = (1.0, 2.0, 4.0, 6.0)  # sampler guidance compared (fresh pools)
    guidance_per_class: int = 50  # pool images per class sampled for each guidance scale

    def __post_init__(self) -> None:
        if self.network not in NETWORKS:
            raise ValueError(f"network {self.network!r} is not one of {NETWORKS}")
        if self.seeds < 1 or self.guidance_per_class < 1:
            raise ValueError("seeds and guidance_per_class must be positive")
        bad = [k for k in self.contrastive_kinds if k not in CONTRASTIVE[1:]]
        if bad:
            raise ValueError(f"contrastive_kinds {bad} are not among {CONTRASTIVE[1:]}")
        for method in self.methods:
            base, _, graph = method.partition(":")
            if base not in SELECTION_METHODS or (graph and (base != "infodist" or graph not in ("knn", "paper", "umap"))):
                raise ValueError(f"method {method!r}: use a selection method, or infodist:knn|paper|umap")
        if min(self.ipcs, default=1) < 1 or min(self.pool_sizes, default=1) < 1:
            raise ValueError("ipcs and pool_sizes must be positive")


@dataclass(frozen=True)
class PrivacyConfig:
    """The privacy audit of notebook 07 (`privacy/audit.py`, `privacy/measures.py`): members are the real train
    split, non-members the real val split."""

    planted_noise: float = 2.0  # std (0..255 units) of the noise on the planted train copies (the control)
    neighbours: int = 50  # train images whose mean distance scales a near-copy's (Carlini et al. 2023)
    near_copy_threshold: float = 1 / 3  # Carlini et al.'s fixed near-copy ratio, reported beside the calibrated test
    near_copy_quantile: float = 0.01  # calibrated test: under this quantile of unseen real images' ratios, per class
    cells: int = 5  # k-means cells of the data-copying test C_T (Meehan et al. 2020)
    reference_models: int = 4  # classifiers on random pool subsets calibrating the reference-model attack
    selection_images: int = 500  # pool images the audit's classifiers choose their checkpoint on (not val)
    max_members: int = 10000  # train images the membership attacks score (a seeded subset when there are more)
    # Low noise levels: memorisation shows where little noise is added (on the demo the
    # control denoiser was caught at t = 50 and 100, not at 200 or 400).
    timesteps: tuple[int, ...] = (20, 50, 100)  # noise levels of the generator's membership attack
    draws: int = 4  # noise draws averaged per image and timestep
    control_per_class: int = 2  # train images per class the control denoiser is overtrained on
    control_steps: int = 3000  # its training steps (at 4 per class and 1500 steps it was not caught)
    control_hidden_size: int = 64  # its width
    control_depth: int = 3  # its blocks (odd)
    n_boot: int = 2000  # bootstrap resamples of each attack's AUC interval
    seed: int = 0  # seed of subsets, noise, features and bootstraps

    def __post_init__(self) -> None:
        if self.reference_models < 2:
            raise ValueError("reference_models must be at least 2 (the reference attack fits a spread)")
        if not self.timesteps or min(self.timesteps) < 0:
            raise ValueError("timesteps must be a non-empty tuple of diffusion timesteps >= 0")
        if min(self.neighbours, self.cells, self.draws, self.control_per_class, self.control_steps,
               self.control_hidden_size, self.selection_images, self.max_members, self.n_boot) < 1:
            raise ValueError("neighbours, cells, draws, control_*, selection_images, max_members and n_boot "
                             "must be positive")
        if self.control_depth % 2 == 0:
            raise ValueError("control_depth must be odd")
        if not 0 < self.near_copy_threshold < 1 or not 0 < self.near_copy_quantile < 1 or self.planted_noise < 0:
            raise ValueError("near_copy_threshold and near_copy_quantile must lie in (0, 1) and planted_noise be >= 0")
