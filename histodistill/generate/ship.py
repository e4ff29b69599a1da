"""Build the generator the package ships for a profile (see `shipped`): train, or take
from the cache, the profile's autoencoder and denoiser from scratch, and write them with
their provenance into ``histodistill/assets/generators/<profile>/``.

    python -m histodistill.generate.ship build --profile demo
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch

from .. import cache, machine, presets
from ..data import dataset
from . import shipped, stages


def build(profile: str, out: Path | None = None, progress: bool = True, cache_root: Path | None = None) -> Path:
    """Train (or take from the cache) `profile`'s autoencoder and denoiser from scratch and
    write them, with their provenance, to ``assets/generators/<profile>/`` (or `out`)."""
    out = Path(out) if out else shipped.ASSETS / profile
    bundle = dataset.prepare_data(presets.stage_config("data", profile), cache_root)
    ae_cfg = dataclasses.replace(presets.stage_config("autoencoder", profile), shipped=False)
    dm_cfg = dataclasses.replace(presets.stage_config("diffusion", profile), shipped=False)
    if ae_cfg.pretrained:
        raise ValueError(f"profile {profile!r} loads a pretrained autoencoder: nothing to ship")
    if dm_cfg.space != "latent":
        raise ValueError(f"profile {profile!r} denoises in {dm_cfg.space} space: only a latent generator "
                         "(autoencoder + denoiser) is shipped")
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
        "command": f"python -m histodistill.generate.ship build --profile {profile}",
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
    (tmp / shipped.PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"[shipped] wrote {out} ({size / 2**20:.1f} MiB)")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m histodistill.generate.ship", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train a profile's generator from scratch and ship it in the package")
    b.add_argument("--profile", default="demo", choices=presets.PROFILES)
    b.add_argument("--out", type=Path, default=None, help="folder to write (default: assets/generators/<profile>)")
    args = ap.parse_args(argv)
    build(args.profile, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
