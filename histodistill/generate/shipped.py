"""Generators shipped inside the package, so the demo need not spend an hour training one.

Training the demo's generator to real-image quality takes longer on a 2-core CPU than a
demo should. The package therefore carries the result of that training, produced by this
project's own code with one command,

    python -m histodistill.generate.shipped build --profile demo

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

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import cache, machine, presets

ASSETS = Path(__file__).parent / "assets" / "generators"
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


# --- building one ------------------------------------------------------------------------------


def build(profile: str, out: Path | None = None, progress: bool = True, cache_root: Path | None = None) -> Path:
    """Train (or take from the cache) `profile`'s autoencoder and denoiser from scratch and
    write them, with their provenance, to ``assets/generators/<profile>/`` (or `out`)."""
    from ..data import dataset
    from . import stages  # stages imports this module

    out = Path(out) if out else ASSETS / profile
    bundle = dataset.prepare_data(presets.stage_config("data", profile), cache_root)
    ae_cfg = dataclasses.replace(presets.stage_config("autoencoder", profile), shipped=False)
    dm_cfg = dataclasses.replace(presets.stage_config("diffusion", profile), shipped=False)
    if ae_cfg.pretrained:
        raise ValueError(f"profile {profile!r} loads a pretrained autoencoder: nothing to ship")
    vae_artifact = stages.fit_autoencoder(ae_cfg, bundle, progress, cache_root=cache_root)
    ldm_artifact = stages.fit_diffusion(dm_cfg, vae_artifact, bundle, progress, cache_root=cache_root)

    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copytree(ldm_artifact.file("pipeline") / "vae", tmp / "vae")
    shutil.copytree(ldm_artifact.file("pipeline") / "transformer", tmp / "transformer")
    shutil.copy(vae_artifact.file("history.csv"), tmp / "autoencoder_history.csv")
    shutil.copy(ldm_artifact.file("history.csv"), tmp / "diffusion_history.csv")
    records = {name: json.loads(a.file(cache.CONFIG_FILE).read_text())
               for name, a in (("autoencoder", vae_artifact), ("diffusion", ldm_artifact))}
    history = stages.history(ldm_artifact)
    provenance = {
        "profile": profile,
        "command": f"python -m histodistill.generate.shipped build --profile {profile}",
        "data_key": bundle.artifact.key,
        "autoencoder": {"identity": vae_artifact.key, **{k: records["autoencoder"][k] for k in ("config", "inputs", "version")}},
        "diffusion": {"identity": ldm_artifact.key, **{k: records["diffusion"][k] for k in ("config", "inputs", "version")}},
        "minutes": {
            "autoencoder": round(records["autoencoder"]["build_seconds"] / 60, 1),
            "diffusion training": round(float(history["seconds"].iloc[-1]) / 60, 1) if "seconds" in history else None,
        },
        "built": records["diffusion"]["created"],
        "machine": {"cpu": machine.cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "device": "cuda" if torch.cuda.is_available() else "cpu"},
        "files": {f.relative_to(tmp).as_posix(): cache.sha256_file(f) for f in sorted(tmp.rglob("*")) if f.is_file()},
    }
    (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"[shipped] wrote {out} ({size / 2**20:.1f} MiB)")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m histodistill.generate.shipped", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train a profile's generator from scratch and ship it in the package")
    b.add_argument("--profile", default="demo", choices=presets.PROFILES)
    b.add_argument("--out", type=Path, default=None, help="folder to write (default: assets/generators/<profile>)")
    args = ap.parse_args(argv)
    build(args.profile, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
