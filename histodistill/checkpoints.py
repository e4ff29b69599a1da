"""Numbered checkpoints of one training run, written so that a kill at any moment loses at
most the steps since the last one.

Each checkpoint is a ``step-NNNNNNN/`` folder in the run's work folder: the weights as
safetensors, the rest of the training state (optimiser, schedules, EMA, random streams)
as a weights-only torch file, and ``state.json`` (step, configuration hash, loss history
and anything JSON can hold). The folder is written under a temporary name and renamed when
complete; only then does the ``LATEST`` file (replaced atomically) point at it. The newest
two are kept: when the newest cannot be read (a truncated copy, a disk error), loading
falls back to the one before with a message. A checkpoint written under another
configuration is refused rather than resumed. The diffusion model and the autoencoder both
train through this.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

LATEST = "LATEST"
STATE = "state.json"
WEIGHTS = "model.safetensors"
TRAINING = "training_state.pt"


class CheckpointMismatch(Exception):
    """A checkpoint exists for a different configuration."""


@dataclass
class Checkpoint:
    folder: Path
    state: dict[str, Any]  # step, config_hash, history, ... (state.json)
    weights: dict[str, torch.Tensor]
    training: dict[str, Any]  # optimiser, schedules, random streams

    @property
    def step(self) -> int:
        return int(self.state["step"])


class CheckpointFolder:
    """The checkpoints of one run (`stage` names it in messages) under `work_dir`."""

    def __init__(self, work_dir: Path, config_hash: str, stage: str):
        self.work_dir, self.config_hash, self.stage = Path(work_dir), config_hash, stage

    def latest(self) -> Path | None:
        try:
            name = (self.work_dir / LATEST).read_text().strip()
        except OSError:
            return None
        folder = self.work_dir / name
        return folder if (folder / STATE).is_file() else None

    def complete(self) -> list[Path]:
        """Complete checkpoint folders, newest first."""
        return sorted((f for f in self.work_dir.glob("step-*") if (f / STATE).is_file()),
                      key=lambda f: f.name, reverse=True)

    def save(self, step: int, weights: dict[str, torch.Tensor], training: dict[str, Any],
             state: dict[str, Any] | None = None) -> Path:
        folder = self.work_dir / f"step-{step:07d}"
        tmp = self.work_dir / f".{folder.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, tmp / WEIGHTS)
        torch.save(training, tmp / TRAINING)
        (tmp / STATE).write_text(json.dumps({**(state or {}), "step": step, "config_hash": self.config_hash}))
        shutil.rmtree(folder, ignore_errors=True)
        os.rename(tmp, folder)
        previous = self.latest()
        pointer = self.work_dir / f".{LATEST}.tmp"
        pointer.write_text(folder.name)
        os.replace(pointer, self.work_dir / LATEST)  # the switch to the new checkpoint
        # Keep the new checkpoint and the one before it: if the newest is ever found
        # unreadable, resuming falls back to the other.
        for old in self.complete()[2:]:
            if old not in (folder, previous):
                shutil.rmtree(old, ignore_errors=True)
        return folder

    def load(self, map_location: str | torch.device = "cpu") -> Checkpoint | None:
        """The newest readable checkpoint (None when there is none); refuses one written
        under another configuration."""
        latest = self.latest()
        candidates = ([latest] if latest else []) + [f for f in self.complete() if f != latest]
        for folder in candidates:
            try:
                state = json.loads((folder / STATE).read_text())
                weights = load_file(folder / WEIGHTS)
                training = torch.load(folder / TRAINING, weights_only=True, map_location=map_location)
            except Exception as err:  # safetensors, pickle, json and OS errors alike: try the one before
                print(f"[{self.stage}] checkpoint {folder} is unreadable ({type(err).__name__}: {err}); "
                      f"trying the one before it")
                continue
            if state.get("config_hash") != self.config_hash:
                raise CheckpointMismatch(
                    f"the checkpoint in {folder} was written for another configuration "
                    f"({str(state.get('config_hash'))[:12]}, this run is {self.config_hash[:12]}); delete "
                    f"{self.work_dir} to start afresh"
                )
            return Checkpoint(folder, state, weights, training)
        if candidates:
            print(f"[{self.stage}] no readable checkpoint in {self.work_dir}: training from step 0")
        return None
