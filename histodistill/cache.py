"""An artifact cache keyed by content, written atomically.

Every expensive stage runs through `cached()`. The stage's key is the SHA-256 of

    (stage name, stage version, the stage's resolved configuration, its inputs' keys)

where an input is an upstream artifact's key or a data file's digest. Equal keys mean the
stage loads its earlier result; any changed field, upstream result or data file gives a
new key, so that stage and everything downstream recompute. Bump a stage's ``version``
when its code changes what it writes.

A result is built in a temporary folder and renamed into place only after its resolved
configuration (``config.json``) and a manifest of its files (``COMPLETE.json``, written
last) are on disk. A folder without a valid manifest, or whose files no longer match it,
is never read: it is discarded and rebuilt. An interrupted build leaves only a
``.tmp-*`` folder behind, removed by the next run of that stage. A stage that trains for
long keeps its checkpoints in a ``.work-<key>`` folder (`work_dir`) instead, which an
interruption does not remove: the next run with the same key resumes from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import config as config_mod
from . import paths

MARKER = "COMPLETE.json"
CONFIG_FILE = "config.json"
KEY_CHARS = 16  # folder names use the key's first 16 hex digits


def digest(obj: Any) -> str:
    """SHA-256 of `obj` as canonical JSON (sorted keys, no whitespace)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def file_digest(path: str | Path, cache_root: Path | None = None) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) so large data
    files are read once, not on every run."""
    path = Path(path).resolve()
    stat = path.stat()
    memo_file = (cache_root or paths.cache_dir()) / "file_digests.json"
    memo_key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = _read_json(memo_file) or {}
    if memo_key in memo:
        return memo[memo_key]
    memo[memo_key] = sha256_file(path)
    write_json_atomic(memo_file, memo)
    return memo[memo_key]


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """A completed stage result: a folder of files plus its resolved configuration."""

    stage: str
    key: str
    path: Path

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def config(self) -> dict[str, Any]:
        return _read_json(self.path / CONFIG_FILE)["config"]


def stage_key(stage: str, cfg: Any, inputs: dict[str, str], version: int) -> str:
    return digest({"stage": stage, "version": version, "config": config_mod.to_dict(cfg), "inputs": inputs})


def work_dir(stage: str, cfg: Any, inputs: dict[str, str] | None = None, version: int = 1,
             cache_root: Path | None = None) -> tuple[Path, str]:
    """A persistent scratch folder for a stage that checkpoints while it builds, and the
    stage's key. Unlike the build folder it survives an interrupted run, so the next run
    with the same key resumes from it; the stage removes it once its result is complete."""
    key = stage_key(stage, cfg, dict(inputs or {}), version)
    return (cache_root or paths.cache_dir()) / stage / f".work-{key[:KEY_CHARS]}", key


def cached(
    stage: str,
    cfg: Any,
    build: Callable[[Path], None],
    inputs: dict[str, str] | None = None,
    version: int = 1,
    cache_root: Path | None = None,
    log: Callable[[str], None] = print,
) -> Artifact:
    """Return the stage's artifact, calling ``build(folder)`` only when none is cached.

    `build` writes its files into the folder it is given; it must not write elsewhere.
    If it raises, nothing is kept and the error propagates.
    """
    inputs = dict(inputs or {})
    key = stage_key(stage, cfg, inputs, version)
    stage_dir = (cache_root or paths.cache_dir()) / stage
    final = stage_dir / key[:KEY_CHARS]
    if is_complete(final, key):
        log(f"[{stage}] cached result {final}")
        return Artifact(stage, key, final)
    if final.exists():
        log(f"[{stage}] discarding an incomplete or altered result in {final}")
        shutil.rmtree(final)
    _remove_orphans(stage_dir)

    tmp = stage_dir / f".tmp-{key[:KEY_CHARS]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    started = time.time()
    try:
        build(tmp)
        record = {
            "stage": stage,
            "version": version,
            "key": key,
            "config": config_mod.to_dict(cfg),
            "inputs": inputs,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.time() - started, 3),
        }
        write_json_atomic(tmp / CONFIG_FILE, record)
        write_json_atomic(tmp / MARKER, {"key": key, "files": _manifest(tmp, fsync=True)})
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same stage first: keep its result.
            if not is_complete(final, key):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[{stage}] built in {time.time() - started:.1f} s -> {final}")
    return Artifact(stage, key, final)


def is_cached(stage: str, cfg: Any, inputs: dict[str, str] | None = None, version: int = 1,
              cache_root: Path | None = None) -> bool:
    """True when `cached` would return a stored result for these arguments without building."""
    key = stage_key(stage, cfg, dict(inputs or {}), version)
    return is_complete((cache_root or paths.cache_dir()) / stage / key[:KEY_CHARS], key)


def is_complete(folder: Path, key: str) -> bool:
    """True only if `folder` holds a finished result for `key` whose files are intact."""
    marker = _read_json(folder / MARKER)
    if not marker or marker.get("key") != key:
        return False
    try:
        current = _manifest(folder)
    except OSError:
        return False
    return current == marker.get("files")


def _manifest(folder: Path, fsync: bool = False) -> dict[str, int]:
    """Relative path -> size in bytes of every file in `folder` except the marker."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MARKER:
            continue
        if fsync:
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        files[rel] = path.stat().st_size
    return files


def _remove_orphans(stage_dir: Path) -> None:
    """Delete temporary folders left by builds whose process no longer runs."""
    if not stage_dir.is_dir():
        return
    for tmp in stage_dir.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[2])
        except (IndexError, ValueError):
            pid = -1
        if not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
