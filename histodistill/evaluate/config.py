"""What notebooks 05-06 train: the main table, the Distribution Matching baseline, the ablations."""

from __future__ import annotations

from dataclasses import dataclass

from ..classifiers.config import CONTRASTIVE, NETWORKS
from ..select.config import SELECTION_METHODS


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
