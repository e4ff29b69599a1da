"""An artifact cache keyed by content, written atomically.

Every expensive stage runs through `cached()`. The stage's key is the SHA-256 of (stage
name, stage version, the stage's resolved configuration, its inputs' keys), where an input
is an upstream artifact's key or a data file's digest. Equal keys mean the stage loads its
earlier result; any changed field, upstream result or data file gives a new key, so that
stage and everything downstream recompute. Bump a stage's ``version`` when its code
changes what it writes.

A result is built in a temporary folder and renamed into place only after its resolved
configuration (``config.json``) and a manifest of its files (``COMPLETE.json``, written
last: each file's size and BLAKE2b content digest) are on disk. A folder without a valid
manifest, or whose files no longer match it in size or content, is never read: it is
discarded, with a line naming the file, and rebuilt. An interrupted build leaves a ``.tmp-*``
folder, removed by the stage's next run; a long training checkpoints in a ``.work-<key>``
folder (`work_dir`) that an interruption keeps: the next run with the same key resumes.

Two processes that need the same missing result do not build it twice: the builder holds a
lock file per key (``.locks/<stage>-<key>``, `filelock`); the other says what it waits for,
waits, then reads the result. Lock files stay (empty): removing one could let a third
process lock a new file while the second still waits on the old one.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock, Timeout

from . import paths

MARKER = "COMPLETE.json"
DISK_FULL_BYTES = 1 << 20  # a write error with less free space than this is a full disk
CONFIG_FILE = "config.json"
KEY_CHARS = 16  # folder names use the key's first 16 hex digits
LOCKS = ".locks"  # the builders' lock files, one per stage and key

# An option added after results were keyed (and shipped) without it: at its default it does
# what they did, so it stays out of the key and every old key holds.
ADDED_LATER = {"added_later": True}


def to_dict(cfg) -> dict[str, Any]:
    """A configuration (dataclass, or already a dict) as plain JSON-ready data: what gets
    hashed and saved; a field marked `ADDED_LATER` is left out while at its default."""
    if not dataclasses.is_dataclass(cfg):
        return dict(cfg)
    later = {f.name: f.default for f in dataclasses.fields(cfg) if f.metadata.get("added_later")}
    return {k: v for k, v in dataclasses.asdict(cfg).items() if not (k in later and v == later[k])}


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


# Content digests computed in this process, per (path, size, mtime): a stage checked several
# times in one run (e.g. a model read by notebook 05's budget check and its table) is read once.
_DIGESTS: dict[tuple[str, int, int], str] = {}


def content_digest(path: Path) -> str:
    """BLAKE2b (128-bit) of a file's bytes: fast enough to check every cached file on every
    read (bench/trials/cache_digest.py measures it)."""
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        blake = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                blake.update(block)
        _DIGESTS[memo] = blake.hexdigest()
    return _DIGESTS[memo]


class CacheError(OSError):
    """The cache cannot store a result (e.g. its disk is full)."""


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
    return digest({"stage": stage, "version": version, "config": to_dict(cfg), "inputs": inputs})


def work_dir(stage: str, cfg: Any, inputs: dict[str, str] | None = None, version: int = 1,
             cache_root: Path | None = None) -> tuple[Path, str]:
    """A persistent scratch folder for a stage that checkpoints while it builds, and the
    stage's key. Unlike the build folder it survives an interrupted run, so the next run
    with the same key resumes from it; the stage removes it once its result is complete."""
    key = stage_key(stage, cfg, dict(inputs or {}), version)
    return (cache_root or paths.cache_dir()) / stage / f".work-{key[:KEY_CHARS]}", key


def cached(stage: str, cfg: Any, build: Callable[[Path], None], inputs: dict[str, str] | None = None,
           version: int = 1, cache_root: Path | None = None, log: Callable[[str], None] = print) -> Artifact:
    """Return the stage's artifact, calling ``build(folder)`` only when none is cached.

    `build` writes its files into the folder it is given; it must not write elsewhere.
    If it raises, nothing is kept and the error propagates.
    """
    inputs = dict(inputs or {})
    key = stage_key(stage, cfg, inputs, version)
    stage_dir = (cache_root or paths.cache_dir()) / stage
    final = stage_dir / key[:KEY_CHARS]
    if problem(final, key) is None:
        log(f"[{stage}] cached result {final}")
        return Artifact(stage, key, final)
    locks = stage_dir.parent / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    lock = FileLock(locks / f"{stage}-{key[:KEY_CHARS]}")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"[{stage}] another process is building this result ({final}); waiting for it to finish")
        lock.acquire()
    try:
        return _build_locked(stage, cfg, build, inputs, version, key, stage_dir, final, log)
    finally:
        lock.release()


def _build_locked(stage: str, cfg: Any, build: Callable[[Path], None], inputs: dict[str, str], version: int,
                  key: str, stage_dir: Path, final: Path, log: Callable[[str], None]) -> Artifact:
    """`cached`'s build, under the key's lock: the result may have been finished meanwhile."""
    reason = problem(final, key)
    if reason is None:
        log(f"[{stage}] cached result {final}")
        return Artifact(stage, key, final)
    if final.exists():
        log(f"[{stage}] discarding the cached result in {final}: {reason}; rebuilding it")
        shutil.rmtree(final)
    _remove_orphans(stage_dir)

    tmp = stage_dir / f".tmp-{key[:KEY_CHARS]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    started = time.time()
    try:
        build(tmp)
        record = {"stage": stage, "version": version, "key": key, "config": to_dict(cfg), "inputs": inputs,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_seconds": round(time.time() - started, 3)}
        write_json_atomic(tmp / CONFIG_FILE, record)
        write_json_atomic(tmp / MARKER, {"key": key, "files": _manifest(tmp, fsync=True)})
        os.rename(tmp, final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if err.errno == errno.ENOSPC or shutil.disk_usage(stage_dir).free < DISK_FULL_BYTES:
            # numpy and torch word it as "problem writing element 128000 to file": say what it is.
            raise CacheError(f"[{stage}] the disk holding {stage_dir} is full ({err}); nothing was kept. Free "
                             f"some space, or point HISTODISTILL_CACHE at a disk with room, and run again") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"[{stage}] built in {time.time() - started:.1f} s -> {final}")
    return Artifact(stage, key, final)


def is_cached(stage: str, cfg: Any, inputs: dict[str, str] | None = None, version: int = 1,
              cache_root: Path | None = None) -> bool:
    """True when `cached` would return a stored result for these arguments without building."""
    key = stage_key(stage, cfg, dict(inputs or {}), version)
    return problem((cache_root or paths.cache_dir()) / stage / key[:KEY_CHARS], key) is None


def problem(folder: Path, key: str) -> str | None:
    """Why `folder` cannot serve `key`, in a few words naming the file at fault; None when
    it holds a finished result whose files match their recorded sizes and content digests."""
    marker = _read_json(folder / MARKER)
    if not marker or marker.get("key") != key:
        return "no finished result" if folder.exists() else "not built yet"
    recorded = marker.get("files") or {}
    try:
        sizes = _sizes(folder)
    except OSError as err:
        return f"its files cannot be read ({err})"
    for rel in sorted(set(recorded) | set(sizes)):
        if rel not in sizes:
            return f"{rel} is missing"
        if rel not in recorded:
            return f"{rel} was not part of the result"
        entry = recorded[rel]
        if not isinstance(entry, dict) or not {"size", "blake2b"} <= set(entry):
            return f"its manifest records no size and digest for {rel}"
        if sizes[rel] != entry["size"]:
            return f"{rel} changed size ({sizes[rel]} bytes, {entry['size']} recorded)"
    for rel, entry in recorded.items():
        if content_digest(folder / rel) != entry["blake2b"]:
            return f"{rel} changed (its content no longer matches the digest recorded when it was built)"
    return None


def _sizes(folder: Path) -> dict[str, int]:
    """Relative path -> size in bytes of every file in `folder` except the marker."""
    return {path.relative_to(folder).as_posix(): path.stat().st_size
            for path in sorted(p for p in folder.rglob("*") if p.is_file()) if path.name != MARKER
            or path.parent != folder}


def _manifest(folder: Path, fsync: bool = False) -> dict[str, dict]:
    """Relative path -> {"size", "blake2b"} of every file in `folder` except the marker."""
    files = {}
    for rel, size in _sizes(folder).items():
        if fsync:
            with open(folder / rel, "rb") as fh:
                os.fsync(fh.fileno())
        files[rel] = {"size": size, "blake2b": content_digest(folder / rel)}
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
