"""Distribution Matching (Zhao & Bilen, WACV 2023): a classic dataset-distillation baseline.

    >>> from histodistill.classifiers import convnet
    >>> from histodistill.evaluate import dm
    >>> mean, std = convnet.channel_stats(train_images)
    >>> syn, syn_labels = dm.distribution_matching(train_images, train_labels, 9, ipc=10,
    ...                                            iterations=20000, mean=mean, std=std)
    >>> export = dm.to_uint8(syn, mean, std)     # uint8 (N, H, W, C), ready to save or view

Synthetic images are learned so that, under many randomly initialised ConvNets, the mean
embedding of each class's synthetic images equals the mean embedding of its real images.
Every iteration draws a fresh ConvNet (`histodistill.classifiers.convnet.ConvNet`, its `.features`:
the flattened last block), samples a real batch per class, and takes one SGD step
(momentum 0.5) on the synthetic pixels to reduce

    sum over classes c of || mean embed(real_c) - mean embed(syn_c) ||^2 .

Everything lives in the normalised space of `convnet.to_tensor` (pixels in 0..1, minus the
per-channel mean, over the std). `ConvNet.features` does not normalise: its `mean`/`std`
buffers are only read by `convnet.predict`/`embed`. Here real batches are normalised with
`to_tensor` using the same mean/std that are copied into each embedder's buffers, so the
synthetic images can be exported with `to_uint8` under those statistics and fed to a
classifier whose buffers hold them.

`dsa`, if given, is a callable `dsa(x, generator, params=None) -> (x_aug, params)`:
differentiable augmentation applied to a class's real batch (params drawn) and then to its
synthetic batch with the SAME params (Siamese augmentation), passed by keyword. Params must
therefore suit a batch of any size (real batches hold up to `batch_real` images, synthetic
ones `ipc`): with `histodistill.classifiers.augmentation.DSA`, use `DSA(shared=True).augment`. A seeded run repeats exactly on the CPU and leaves the global RNG alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoints import CheckpointFolder
from ..classifiers import convnet
from ..classifiers.convnet import ConvNet, channel_stats, to_tensor
from ..progress import tqdm

MOMENTUM = 0.5  # the DM paper's momentum for the image optimiser

Dsa = Callable[..., tuple[torch.Tensor, object]]


def match_loss(embed: Callable[[torch.Tensor], torch.Tensor], real_batches: list[torch.Tensor],
               syn_batches: list[torch.Tensor], dsa: Dsa | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Sum over classes of the squared distance between the mean embeddings of
    `real_batches[c]` and `syn_batches[c]` (each (n, C, H, W), normalised).

    Real embeddings carry no gradient; synthetic ones do. With `dsa`, each class's real
    batch is augmented first and its synthetic batch then gets the same params."""
    if len(real_batches) != len(syn_batches) or not real_batches:
        raise ValueError(f"need one real and one synthetic batch per class "
                         f"({len(real_batches)} vs {len(syn_batches)})")
    if dsa is not None and generator is None:
        raise ValueError("dsa needs a torch.Generator to draw its params from")
    loss = syn_batches[0].new_zeros(())
    for real, syn in zip(real_batches, syn_batches):
        if dsa is not None:
            real, params = dsa(real, generator)
            syn, _ = dsa(syn, generator, params=params)  # keyword: DSA.augment's 3rd is family
        with torch.no_grad():
            target = embed(real).mean(0)
        loss = loss + ((target - embed(syn).mean(0)) ** 2).sum()
    return loss


def match_step(embed: Callable[[torch.Tensor], torch.Tensor], real_batches: list[torch.Tensor],
               syn: torch.Tensor, optimizer: torch.optim.Optimizer, dsa: Dsa | None = None,
               generator: torch.Generator | None = None) -> float:
    """One optimiser step on the synthetic images `syn` ((n_classes * ipc, C, H, W), a leaf
    with requires_grad, ordered class by class) against `real_batches` (one per class).
    Returns the matching loss before the step."""
    n_classes = len(real_batches)
    if n_classes == 0 or len(syn) % n_classes:
        raise ValueError(f"{len(syn)} synthetic images do not split evenly over {n_classes} classes")
    syn_batches = list(syn.split(len(syn) // n_classes))
    loss = match_loss(embed, real_batches, syn_batches, dsa, generator)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def _as_source(real_images, mean, std) -> tuple[torch.Tensor, bool, np.ndarray, np.ndarray]:
    """The real images as a tensor, whether they are uint8 (N, H, W, C) still to be
    normalised (True) or already-normalised float (N, C, H, W) (False), and the statistics."""
    is_uint8 = (isinstance(real_images, np.ndarray) and real_images.dtype == np.uint8) or (
        isinstance(real_images, torch.Tensor) and real_images.dtype == torch.uint8)
    if is_uint8:
        images = torch.as_tensor(np.ascontiguousarray(real_images)) if isinstance(
            real_images, np.ndarray) else real_images.cpu()
        if images.ndim != 4 or images.shape[1] != images.shape[2]:
            raise ValueError(f"uint8 real images must be (N, S, S, C), not {tuple(images.shape)}")
        if mean is None or std is None:
            if mean is not None or std is not None:
                raise ValueError("give both mean and std, or neither (then the real images' own)")
            mean, std = channel_stats(images.numpy())
        return images, True, np.asarray(mean, np.float32), np.asarray(std, np.float32)
    images = torch.as_tensor(real_images)
    if not images.is_floating_point() or images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError("real images must be uint8 (N, S, S, C) or normalised float (N, C, S, S), "
                         f"not {images.dtype} {tuple(images.shape)}")
    if mean is None or std is None:
        raise ValueError("normalised float real images need the mean and std they were normalised with")
    return images.detach().float().cpu(), False, np.asarray(mean, np.float32), np.asarray(std, np.float32)


def distribution_matching(
    real_images,
    real_labels,
    n_classes: int,
    ipc: int,
    iterations: int,
    lr_img: float = 1.0,
    batch_real: int = 256,
    seed: int = 0,
    embed_width: int = 128,
    init: str = "real",
    dsa: Dsa | None = None,
    progress: bool = False,
    mean=None,
    std=None,
    device: str | torch.device | None = None,
    return_losses: bool = False,
    work_dir: Path | None = None,
    checkpoint_every: int = 500,
    config_hash: str = "",
):
    """Learn `ipc` synthetic images per class by distribution matching.

    real_images: uint8 (N, S, S, C), normalised with `mean`/`std` (default: their own
        `convnet.channel_stats`), or float (N, C, S, S) already normalised (then `mean` and
        `std` are required, and only copied into the embedders' buffers).
    real_labels: (N,) ints in 0..n_classes-1; every class needs at least one image.
    init: "real" starts from `ipc` distinct random real images of each class (the class
        then needs >= ipc images); "noise" from standard normal noise (in normalised units).
    dsa: optional Siamese augmentation `dsa(x, generator, params=None) -> (x_aug, params)`.
    Returns (images float32 (n_classes * ipc, C, S, S) on the CPU in the normalised space,
    labels int64 (n_classes * ipc,) = [0]*ipc + [1]*ipc + ...), and with `return_losses`
    also the list of per-iteration matching losses (before each step; each under a
    different random embedder, so noisy).
    work_dir: checkpoint there every `checkpoint_every` iterations (`checkpoints.py`: the
        images, the optimiser's momentum, both random streams, the losses) and resume from
        the newest checkpoint found, to the same result as an uninterrupted run; a
        checkpoint of another `config_hash` is refused."""
    if n_classes < 1 or ipc < 1 or iterations < 0 or batch_real < 1 or embed_width < 1:
        raise ValueError(f"need n_classes, ipc, batch_real, embed_width >= 1 and iterations >= 0 "
                         f"(got {n_classes}, {ipc}, {batch_real}, {embed_width}, {iterations})")
    if init not in ("real", "noise"):
        raise ValueError(f"init must be 'real' or 'noise', not {init!r}")
    if lr_img <= 0:
        raise ValueError(f"lr_img must be > 0, not {lr_img}")
    source, raw, mean, std = _as_source(real_images, mean, std)
    labels = torch.as_tensor(np.asarray(real_labels)).long().flatten()
    if len(labels) != len(source):
        raise ValueError(f"need one label per real image ({len(labels)} vs {len(source)})")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"real labels must lie in 0..{n_classes - 1}")
    by_class = [torch.nonzero(labels == c).flatten() for c in range(n_classes)]
    empty = [c for c, idx in enumerate(by_class) if len(idx) == 0]
    if empty:
        raise ValueError(f"classes {empty} have no real images to match")
    short = [c for c, idx in enumerate(by_class) if len(idx) < ipc]
    if init == "real" and short:
        raise ValueError(f"init='real' needs >= {ipc} real images per class; classes {short} have fewer")
    channels = source.shape[3] if raw else source.shape[1]
    size = source.shape[1] if raw else source.shape[2]
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def fetch(idx: torch.Tensor) -> torch.Tensor:
        batch = source[idx].to(device)
        return to_tensor(batch, mean, std) if raw else batch

    generator = torch.Generator().manual_seed(seed)  # sampling, noise and dsa draws
    if init == "real":
        picks = [idx[torch.randperm(len(idx), generator=generator)[:ipc]] for idx in by_class]
        syn = fetch(torch.cat(picks)).clone()
    else:
        syn = torch.randn(n_classes * ipc, channels, size, size, generator=generator).to(device)
    syn.requires_grad_(True)
    optimizer = torch.optim.SGD([syn], lr=lr_img, momentum=MOMENTUM)
    losses: list[float] = []
    checkpoints = CheckpointFolder(work_dir, config_hash, "dm") if work_dir is not None else None
    with torch.random.fork_rng(devices=[]):  # embedders' init: seeded, global RNG untouched
        torch.manual_seed(seed)
        done = _resume(checkpoints, syn, optimizer, generator, losses, device)
        for it in tqdm(range(done, iterations), desc="DM", unit="it", initial=done, total=iterations,
                       disable=not progress):
            net = ConvNet(n_classes, size, width=embed_width, in_channels=channels)
            net.mean.copy_(torch.from_numpy(mean))
            net.std.copy_(torch.from_numpy(std))
            net.to(device).train().requires_grad_(False)
            real_batches = [
                fetch(idx[torch.randperm(len(idx), generator=generator)[:batch_real]]) for idx in by_class
            ]
            losses.append(match_step(net.features, real_batches, syn, optimizer, dsa, generator))
            if checkpoints is not None and ((it + 1) % checkpoint_every == 0) and it + 1 < iterations:
                checkpoints.save(it + 1, {"images": syn}, {"optimizer": optimizer.state_dict(),
                                                           "generator": generator.get_state(),
                                                           "torch_rng": torch.get_rng_state()}, {"losses": losses})
    images = syn.detach().cpu().float()
    syn_labels = torch.arange(n_classes).repeat_interleave(ipc)
    return (images, syn_labels, losses) if return_losses else (images, syn_labels)


def _resume(checkpoints: CheckpointFolder | None, syn: torch.Tensor, optimizer, generator: torch.Generator,
            losses: list[float], device) -> int:
    """Load the newest checkpoint into the run's state; the iteration it was written at."""
    checkpoint = checkpoints.load(device) if checkpoints is not None else None
    if checkpoint is None:
        return 0
    with torch.no_grad():
        syn.copy_(checkpoint.weights["images"].to(syn.device))
    optimizer.load_state_dict(checkpoint.training["optimizer"])
    generator.set_state(checkpoint.training["generator"].cpu())
    torch.set_rng_state(checkpoint.training["torch_rng"].cpu())  # the embedders' initialisation stream
    losses[:] = checkpoint.state["losses"]
    print(f"[dm] resumed from {checkpoint.folder.name} (iteration {checkpoint.step})")
    return checkpoint.step


def to_uint8(images: torch.Tensor, mean, std) -> np.ndarray:
    """Normalised float (N, C, H, W) -> uint8 (N, H, W, C): the inverse of
    `convnet.to_tensor` under the same mean/std (with its std floor), clipped to 0..255 and
    rounded, so `to_uint8(to_tensor(u, m, s), m, s)` gives `u` back."""
    x = torch.as_tensor(images).detach().float().cpu()
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), not {tuple(x.shape)}")
    mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32).flatten()
    std = torch.as_tensor(np.asarray(std), dtype=torch.float32).flatten()
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"need one mean and std per channel ({x.shape[1]}), got {len(mean)} and {len(std)}")
    x = x * std.clamp(min=convnet.MIN_STD).view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    x = (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()
