"""Training several small models side by side: on CPU one thread each, one worker process
per CPU; on a machine with several GPUs, one worker process per GPU.

The downstream networks and DM's embedders are small; their convolutions share out poorly
over threads, so models side by side beat one model on all threads
(bench/trials/parallel_models.py), and a model trained on one thread has the same weights whatever
the machine's CPU count. With one GPU everything runs in the calling process; with N GPUs
the independent models (groups of runs, DM runs) are spread over N workers, each on its own
GPU, and every model is the one a single GPU would train.

    >>> n = workers.count(tasks=len(chunks), steps=total_steps)   # 1: train here
    >>> with workers.one_thread_on_cpu(): ...                      # training in this process
    >>> workers.start(name, n, fn, *args)       # queue fn(*args) in n workers, return at once
    >>> workers.finish([name, ...])             # wait for what was queued under those names
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Callable, Hashable, Iterable

import torch

from . import machine

VARIABLE = "HISTODISTILL_MODEL_WORKERS"  # processes training at once on CPU (default: one per CPU)
# Starting the workers costs seconds (each imports torch); below this many training steps in
# all (the smoke profile's tiny models, a cached table) they train here instead, on the same
# single thread, so the result is the same either way.
MIN_STEPS = 1000


def available() -> int:
    """Processes training models at once: `HISTODISTILL_MODEL_WORKERS` when set, else one
    per GPU where there are GPUs, else one per available CPU."""
    text = os.environ.get(VARIABLE, "").strip()
    if text and not (text.isdigit() and int(text) >= 1):
        raise ValueError(f"{VARIABLE} must be a positive whole number, not {text!r}")
    if text:
        return int(text)
    return torch.cuda.device_count() if torch.cuda.is_available() else machine.available_cpus()


def count(tasks: int, steps: int, requested: int | None = None) -> int:
    """Worker processes for `tasks` pieces of work of `steps` training steps in all: at most
    `requested` (None: `available()`), one per task and one per GPU; 1 (train here) with a
    single GPU or when the work is too small to be worth starting them."""
    if steps < MIN_STEPS:
        return 1
    limit = torch.cuda.device_count() if torch.cuda.is_available() else None
    return max(1, min(requested or available(), tasks, limit or tasks))


def one_thread_on_cpu():
    """Training on CPU runs on one thread wherever it runs (here or in a worker), so a
    stage's key always means the same weights."""
    return contextlib.nullcontext() if torch.cuda.is_available() else machine.threads(1)


_POOL: tuple[int, ProcessPoolExecutor] | None = None


def pool(n: int) -> ProcessPoolExecutor:
    """`n` worker processes, started once per process and kept for the next table. Started
    with "spawn", so a worker holds no copy of the notebook's state; each runs torch on one
    thread, deterministically. Asked for another `n`, the old workers finish what was
    queued on them (`evaluation.queue`) and then stop."""
    global _POOL
    if _POOL is None or _POOL[0] != n:
        if _POOL is not None:
            _POOL[1].shutdown(wait=False)
        context = multiprocessing.get_context("spawn")
        devices = context.Queue()  # each worker takes one GPU's number as it starts
        for i in range(n):
            devices.put(i % max(1, torch.cuda.device_count()) if torch.cuda.is_available() else None)
        _POOL = (n, ProcessPoolExecutor(n, mp_context=context, initializer=_start, initargs=(devices,)))
    return _POOL[1]


# Work queued in the workers, by name (a cache key), until `finish` collects it: the
# notebook goes on (preparing the next training sets) while the workers train.
_QUEUED: dict[Hashable, Future] = {}


def submit(n: int, fn: Callable, *args, **kwargs) -> Future:
    """`fn(*args, **kwargs)` queued in the pool of `n` workers."""
    return pool(n).submit(_run, fn, *args, **kwargs)


def start(name: Hashable, n: int, fn: Callable, *args, **kwargs) -> None:
    """Queue `fn(*args, **kwargs)` in the pool of `n` workers under `name`, unless work of
    that name is queued already; returns at once."""
    if name not in _QUEUED:
        _QUEUED[name] = submit(n, fn, *args, **kwargs)


def is_queued(name: Hashable) -> bool:
    return name in _QUEUED


def finish(names: Iterable[Hashable], on_done: Callable[[], None] = lambda: None) -> None:
    """Wait for the queued work of `names` (unknown names are skipped), calling `on_done`
    as each piece completes. A worker's exception is raised here, the rest cancelled."""
    futures = {_QUEUED[name]: name for name in names if name in _QUEUED}
    try:
        for future in as_completed(futures):
            del _QUEUED[futures[future]]
            future.result()
            on_done()
    except BaseException:
        for future, name in futures.items():
            future.cancel()
            _QUEUED.pop(name, None)
        raise


_BUSY = False  # in a worker: whether it is running a piece of work now


def _run(fn: Callable, *args, **kwargs):
    global _BUSY
    _BUSY = True
    try:
        return fn(*args, **kwargs)
    finally:
        _BUSY = False


def _on_interrupt(signum, frame) -> None:
    """A worker's Ctrl-C. Jupyter interrupts a kernel's whole process group, the workers
    with it, also when it shuts a finished notebook's kernel down: a working worker stops
    its work (the notebook is told), an idle one waits on, for the next cell's work or for
    the kernel's exit, instead of dying with a traceback of the queue it was waiting on."""
    if _BUSY:
        raise KeyboardInterrupt


def _start(devices) -> None:
    signal.signal(signal.SIGINT, _on_interrupt)
    os.environ[machine.THREADS_VARIABLE] = "1"
    machine.configure_torch()
    device = devices.get()
    if device is not None:  # "cuda" now means this worker's own GPU
        torch.cuda.set_device(device)


@atexit.register
def _stop() -> None:
    if _POOL is not None:
        _POOL[1].shutdown(cancel_futures=True)
