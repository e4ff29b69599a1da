"""What this machine is, for the records that timings and shipped weights carry: figures
measured on one CPU model differ on another (speed, and the last digits of results); and
`configure_torch`, which makes torch repeat a run bit for bit on one machine."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path

THREADS_VARIABLE = "HISTODISTILL_THREADS"


def cpu_name() -> str:
    """The CPU model (e.g. "AMD EPYC 7B13"), or the architecture where it is not known."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    """The GPU's name for a CUDA device; for the CPU, its model, cores and torch threads."""
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads, {cpu_name()})"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset``
    narrow), or all of the machine's where the platform cannot say."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def configure_torch() -> int:
    """Make torch deterministic on this machine; returns the intra-op thread count used.

    The count is ``HISTODISTILL_THREADS`` when set, else `available_cpus`. It is fixed
    rather than left to torch's default because each thread sums its own share of a
    reduction (a convolution, a matrix product) and the partial sums are then added: another
    thread count adds the same numbers in another order, which changes the last bits of
    floats, and training amplifies them. Deterministic algorithms are requested with
    ``warn_only=True``: an operation that has no deterministic form warns instead of failing.
    On CUDA, cuBLAS is deterministic only with a fixed workspace, which must be chosen
    before the first CUDA call, so the variable is set here (unless the user set it).

    It also lets the process reuse the memory it frees (`keep_freed_memory`), which only
    changes speed. Idempotent and cheap: call it first in every process that trains or evaluates. Each
    notebook calls it in its first code cell after the parameters (``machine.configure_torch()``), since papermill runs each notebook in its
    own kernel process."""
    import torch

    text = os.environ.get(THREADS_VARIABLE, "").strip()
    if text and not (text.isdigit() and int(text) >= 1):
        raise ValueError(f"{THREADS_VARIABLE} must be a positive whole number, not {text!r}")
    threads = int(text) if text else available_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    # Deterministic mode also fills every new tensor's memory with NaN before an operation
    # writes it, a guard against reading memory that was never written. No operation here
    # reads such memory (tests/runner/test_determinism.py trains with and without the
    # filling and compares), so it only costs time: 4-6 % of a downstream model's training
    # (bench/trials/unfilled_memory.py).
    torch.utils.deterministic.fill_uninitialized_memory = False
    keep_freed_memory()
    return threads


def keep_freed_memory() -> bool:
    """Let glibc keep the memory a process frees for its next allocations (True where set).

    By default glibc serves every large block (over its mmap threshold) with fresh pages,
    which the kernel must map and zero on first touch, and returns them when freed; a
    sampling batch of the denoiser took over 4 million such page faults per sweep pool.
    Here every block comes from the heap and the heap's top is kept (trimmed only past
    1 GiB), so a step reuses the memory the previous step freed. The arithmetic is untouched:
    results are the same bit for bit. Sampling is 1.1-1.3x faster, a downstream model about
    the same (bench/trials/malloc_settings.py). Elsewhere than glibc nothing is changed."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    trim_threshold, mmap_max = -1, -4  # mallopt's M_TRIM_THRESHOLD and M_MMAP_MAX
    return bool(libc.mallopt(mmap_max, 0)) and bool(libc.mallopt(trim_threshold, 2**30))


@contextlib.contextmanager
def threads(count: int):
    """Run the block with torch on `count` intra-op threads, then restore the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
