"""The generator's two long loops on several processes (GPUs), with HF accelerate.

One process is the default, and runs inside the notebook's own process. With
``processes=N > 1`` a stage starts ``accelerate launch --multi_gpu --num_processes N -m
histodistill.generate.scale_out_worker <task> <spec.json>``, waits for it, and then
finishes in its own process exactly as a one-process run does, from what the workers left in the stage's work
folder (the training checkpoints, the pool's chunks). On a machine without a GPU the same
launch runs N CPU processes (torch's gloo backend): that is how the tests check it.

- **Diffusion training, data-parallel** (`diffusion.Trainer` with a `Shard`): every process
  draws the whole batch from the one seeded generator (images, label dropout, noise,
  timesteps) and keeps its 1/N slice; DDP averages the gradients, and the mean of N equal
  slices' mean gradients is the whole batch's. So N processes take the one-process run's
  steps, up to the order of floating-point sums. Process 0 writes the checkpoints; a run
  resumes from them under any number of processes.
- **Sampling** (`sample_chunks`): the pool is cut into chunks of whole sampler batches,
  process r samples chunks r, r + N, ...; an image's initial noise and SDE noise come from
  its index in the whole pool (`sampling.denoise`'s `span`), so 1 and N processes write the
  same pool, byte for byte. A chunk is written (atomically) as soon as it is done, so an
  interrupted pool resumes at the first missing chunk.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..machine import THREADS_VARIABLE
from ..progress import tqdm

CHUNK_BATCHES = 4  # sampler batches per chunk file of a pool


@dataclass(frozen=True)
class Shard:
    """This process's place among `world` data-parallel processes."""

    rank: int = 0
    world: int = 1

    def part(self, n: int) -> slice:
        """This process's slice of a batch of `n` (which `world` must divide)."""
        if n % self.world:
            raise ValueError(f"a batch of {n} cannot be split evenly over {self.world} processes; "
                             f"choose a batch size divisible by the number of processes")
        size = n // self.world
        return slice(self.rank * size, (self.rank + 1) * size)


def check_processes(processes: int) -> int:
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive integer, not {processes!r}")
    return processes


def free_port() -> int:
    """A TCP port free on this machine now, for the processes to meet on: accelerate's fixed
    default would make two launches at once (two runs, two test processes) collide."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(task: str, spec: dict, processes: int, work: Path) -> None:
    """Run `task` with `spec` on `processes` processes under accelerate; raise with the
    workers' exit status when it fails (what they finished stays in `work`)."""
    work.mkdir(parents=True, exist_ok=True)
    spec_path = work / f"{task}-spec.json"
    spec_path.write_text(json.dumps(spec))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
               "--dynamo_backend", "no",
               "-m", "histodistill.generate.scale_out_worker", task, str(spec_path)]
    print(f"[scale-out] {task} on {processes} processes: accelerate launch ... -m histodistill.generate.scale_out_worker {task}",
          flush=True)
    # The workers use this process's thread count (`machine.configure_torch` reads the
    # variable): on a CPU another count sums in another order and changes the last bits.
    threads = os.environ.get(THREADS_VARIABLE) or str(torch.get_num_threads())
    env = {**os.environ, THREADS_VARIABLE: threads, "OMP_NUM_THREADS": threads}
    done = subprocess.run(command, env=env)
    if done.returncode:
        raise RuntimeError(f"the {processes} {task} processes failed (exit status {done.returncode}); what they "
                           f"finished is kept in {work} and the next run resumes from it")


# --- sampling in chunks ----------------------------------------------------------------------


def chunk_spans(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each chunk of a pool of `n` images: whole sampler batches, so every
    image is denoised in the same batch as in one uninterrupted run."""
    size = batch_size * CHUNK_BATCHES
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def chunk_path(work: Path, index: int) -> Path:
    return work / f"chunk-{index:05d}.npy"


def sample_chunks(pipe, labels: np.ndarray, cfg, work: Path, shard: Shard = Shard(), progress: bool = True) -> None:
    """Sample this process's missing chunks of the pool `labels` under sampling config `cfg`
    into `work` (one .npy of uint8 images each, written atomically)."""
    work.mkdir(parents=True, exist_ok=True)
    spans = chunk_spans(len(labels), cfg.batch_size)
    mine = [i for i in range(len(spans)) if i % shard.world == shard.rank]
    todo = [i for i in mine if not chunk_path(work, i).exists()]
    done = sum(spans[i][1] - spans[i][0] for i in mine if i not in todo)
    bar = tqdm(total=sum(spans[i][1] - spans[i][0] for i in mine), initial=done, desc="sampling", unit="image",
               disable=not progress)
    for i in todo:
        images = pipe(labels, cfg.steps, cfg.guidance_scale, cfg.seed, cfg.batch_size, False, cfg.solver,
                      cfg.guidance_interval, span=spans[i])
        partial = work / f".chunk-{i:05d}.{os.getpid()}.npy"
        np.save(partial, images, allow_pickle=False)
        os.replace(partial, chunk_path(work, i))
        bar.update(len(images))
    bar.close()


def gather_chunks(work: Path, n: int, batch_size: int) -> np.ndarray:
    """The whole pool from its chunk files, in order."""
    spans = chunk_spans(n, batch_size)
    missing = [i for i in range(len(spans)) if not chunk_path(work, i).exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} of the pool's {len(spans)} chunks are missing in {work}")
    return np.concatenate([np.load(chunk_path(work, i), allow_pickle=False) for i in range(len(spans))])
