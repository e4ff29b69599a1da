"""Generators shipped inside the package, so the demo need not spend an hour training one.

Training the demo's generator to real-image quality takes longer on a 2-core CPU than a
demo should. The package therefore carries the result of that training, produced by this
project's own code with one command (`ship`),

    python -m histodistill.generate.ship build --profile demo

and a stage whose configuration says ``shipped=True`` loads it instead of training, but
only when it was built for exactly that stage: same data, same configuration (every field
but ``shipped``), same stage version. Otherwise it says which fields differ and trains from
scratch. ``shipped=False`` always trains; the smoke profile and the tests always train.

    assets/generators/<profile>/
      provenance.json            # identities, configurations, file hashes, minutes, machine, command
      vae/                       # AutoencoderKL: config.json + safetensors
      transformer/               # UViT (EMA weights): config.json + safetensors
      autoencoder_history.csv    # the training curves, for notebook 02's figure
      diffusion_history.csv

A stage's *identity* is the cache key it gets when trained from scratch (``shipped=False``),
so the check is the same hash that keys the cache. A shipped folder whose files no longer
match the hashes in its provenance is ignored, with a message.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import cache, paths

ASSETS = paths.PACKAGE_DIR / "assets" / "generators"
PROVENANCE = "provenance.json"


@dataclass(frozen=True)
class ShippedGenerator:
    folder: Path
    provenance: dict

    @property
    def digest(self) -> str:
        """One hash of all its files (from the provenance, checked when found)."""
        return cache.digest(self.provenance["files"])

    def file(self, name: str) -> Path:
        return self.folder / name


def identity(stage: str, cfg: Any, inputs: dict[str, str], version: int) -> str:
    """The key `stage` has when trained from scratch under `cfg` (its ``shipped`` off)."""
    return cache.stage_key(stage, dataclasses.replace(cfg, shipped=False), inputs, version)


def from_scratch_key(artifact: cache.Artifact) -> str:
    """The key `artifact`'s stage has when trained from scratch: its own key with ``shipped``
    off and the shipped generator's digest left out of its inputs."""
    record = json.loads(artifact.file(cache.CONFIG_FILE).read_text())
    cfg = {**record["config"], "shipped": False} if "shipped" in record["config"] else record["config"]
    inputs = {k: v for k, v in record["inputs"].items() if k != "shipped"}
    return cache.stage_key(record["stage"], cfg, inputs, record["version"])


def shipped_digest(artifact: cache.Artifact) -> str | None:
    """The digest of the shipped generator `artifact` was loaded from, or None if trained."""
    inputs = json.loads(artifact.file(cache.CONFIG_FILE).read_text())["inputs"]
    return inputs.get("shipped") if inputs.get("shipped") not in (None, NONE) else None


NONE = "none"  # the "shipped" input of a stage that asked for a shipped generator and trained


def find(stage: str, cfg: Any, inputs: dict[str, str], version: int, root: Path | None = None,
         log=print) -> ShippedGenerator | None:
    """The shipped generator built for exactly this stage, or None (saying why)."""
    root = Path(root) if root else ASSETS
    wanted = identity(stage, cfg, inputs, version)
    candidates = list(_all(root, log))
    for generator in candidates:
        if generator.provenance[stage]["identity"] == wanted:
            log(f"[{stage}] loading the generator shipped in {generator.folder} "
                f"({generator.provenance['profile']} profile, built with {generator.provenance['command']!r})")
            return generator
    if not candidates:
        log(f"[{stage}] no shipped generator in {root}: training from scratch")
        return None
    closest = candidates[0]
    recorded = closest.provenance[stage]
    differs = _differences(recorded["config"], cache.to_dict(dataclasses.replace(cfg, shipped=False)))
    if not differs and recorded["inputs"] != inputs:
        differs = [f"its input ({', '.join(sorted(inputs))}) differs from the one it was built on"]
    if not differs:
        differs = [f"stage version {version} (it was built at {recorded['version']})"]
    log(f"[{stage}] the shipped generator in {closest.folder} was built for another {stage} stage: "
        f"{'; '.join(differs)}. Training from scratch instead.")
    return None


def _differences(recorded: dict, current: dict) -> list[str]:
    out = []
    for name in sorted(set(recorded) | set(current)):
        a, b = recorded.get(name), current.get(name)
        if (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
            out.append(f"{name} is {b!r} here, {a!r} there")
    return out


def _all(root: Path, log) -> list[ShippedGenerator]:
    out = []
    for prov_file in sorted(Path(root).glob(f"*/{PROVENANCE}")):
        folder = prov_file.parent
        try:
            provenance = json.loads(prov_file.read_text())
        except (OSError, ValueError) as err:
            log(f"[shipped] ignoring {folder}: unreadable {PROVENANCE} ({err})")
            continue
        broken = [name for name, sha in provenance.get("files", {}).items()
                  if not (folder / name).is_file() or cache.sha256_file(folder / name) != sha]
        if broken or not provenance.get("files"):
            log(f"[shipped] ignoring {folder}: files missing or changed since it was built ({', '.join(broken)}); "
                f"restore them with git (git checkout -- {folder}) or rebuild it")
            continue
        out.append(ShippedGenerator(folder, provenance))
    return out
