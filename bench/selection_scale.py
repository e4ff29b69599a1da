"""How InfoDist selection scales with the pool size, for the k-NN graph and the paper's graph.

Synthetic embeddings of the real dimensionality (the ConvNet's feature at 28 px: 128 x 3 x 3
= 1152), float32 Gaussian blobs (`--blobs` per class), over 9 classes; IPC 10. Each run is a
fresh child process, so its numbers do not depend on earlier runs:

- ``seconds``: wall time of ``select_infodist`` alone (graph, Infomap, quotas), not of
  generating the data.
- ``peak_rss_delta_mib``: the extra peak resident memory of the selection over what the
  process held before it (the data included): resource.getrusage(RUSAGE_SELF).ru_maxrss after
  the selection minus VmRSS before it, with the peak reset first by writing 5 to
  /proc/self/clear_refs (Linux). Where that reset is refused, the peak cannot be cleared and
  the ru_maxrss growth is reported instead (a lower bound); ``memory_method`` says which.

The paper graph is O(N^2) per class. A size is skipped when the dense distance matrix of one
class would exceed ``--max-dense-gib`` or when the time extrapolated (x N^2) from the last
finished size exceeds ``--max-seconds``; a run still running at ``--max-seconds`` is stopped.
Its default scale is the released code's 1.0, which gives an empty graph (GraphError, the
run's ``reason``) as soon as a class has more than ~1000 images; ``--paper-scale 50`` times
a denser variant.

    python bench/selection_scale.py                        # 1k, 10k, 100k
    python bench/selection_scale.py --sizes 1000 10000 --graphs knn
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
FEATURE_DIM = 128 * 3 * 3  # ConvNet (width 128, three 2x2 poolings) at 28 px


def synthetic_pool(n: int, n_classes: int, dim: int, blobs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 features (n, dim) and labels: `blobs` Gaussian blobs per class, made in place
    in float32 so no float64 temporary doubles the memory."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    blob = rng.integers(0, blobs, n)
    centres = rng.standard_normal((n_classes, blobs, dim), dtype=np.float32) * 2.0
    features = rng.standard_normal((n, dim), dtype=np.float32)
    for start in range(0, n, 8192):
        part = slice(start, start + 8192)
        features[part] += centres[labels[part], blob[part]]
    return features, labels


def _child(size: int, graph: str, args: dict, queue) -> None:
    from histodistill.select.graphs import GraphError
    from histodistill.select.selection import select_infodist

    features, labels = synthetic_pool(size, args["classes"], args["dim"], args["blobs"])
    params = {"distance_scale": args["paper_scale"]} if graph == "paper" else {"k": args["k"]}
    before, method = _reset_peak_rss()
    start = time.perf_counter()
    try:
        sel = select_infodist(features, labels, args["ipc"], graph=graph, seed=0, **params)
    except GraphError as err:
        queue.put({"status": "error", "reason": f"GraphError: {str(err)[:160]}", "seconds": time.perf_counter() - start})
        return
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    queue.put({
        "status": "ok", "reason": "", "seconds": seconds, "peak_rss_delta_mib": (after - before) / 1024,
        "memory_method": method,
        "edges_per_class": float(np.mean([g["n_edges"] for g in sel.graphs])),
        "modules_per_class": float(np.mean([g["n_modules"] for g in sel.graphs])),
        "selected": len(sel.indices),
    })


def _reset_peak_rss() -> tuple[int, str]:
    """(baseline KiB, method): the current RSS after resetting the peak, or the old peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        status = Path("/proc/self/status").read_text()
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        return rss, "peak reset, ru_maxrss - VmRSS"
    except (OSError, StopIteration, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss growth (lower bound)"


def run_one(size: int, graph: str, args: dict, limit_s: float) -> dict:
    queue = mp.get_context("spawn").Queue()
    child = mp.get_context("spawn").Process(target=_child, args=(size, graph, args, queue))
    child.start()
    child.join(limit_s)
    if child.is_alive():
        child.kill()
        child.join()
        return {"status": "skipped", "reason": f"stopped after {limit_s:.0f} s (--max-seconds)"}
    if queue.empty():
        return {"status": "error", "reason": f"child exited with code {child.exitcode}"}
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--graphs", nargs="+", default=["knn", "paper"], choices=["knn", "paper"])
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--dim", type=int, default=FEATURE_DIM)
    parser.add_argument("--blobs", type=int, default=10, help="Gaussian blobs per class")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--k", type=int, default=10, help="neighbours of the knn graph")
    parser.add_argument("--paper-scale", type=float, default=1.0, help="distance_scale of the paper graph (released: 1.0)")
    parser.add_argument("--max-dense-gib", type=float, default=8.0)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "selection_scale.csv")
    opts = parser.parse_args()
    args = {"classes": opts.classes, "dim": opts.dim, "blobs": opts.blobs, "ipc": opts.ipc, "k": opts.k,
            "paper_scale": opts.paper_scale}

    rows = []
    for graph in opts.graphs:
        last = None  # (size, seconds) of the last finished run, for the N^2 extrapolation
        for size in sorted(opts.sizes):
            per_class = -(-size // opts.classes)
            row = {"pool_size": size, "graph": graph, "per_class": per_class, "dim": opts.dim, "ipc": opts.ipc,
                   "cpus": os.cpu_count()}
            dense_gib = per_class**2 * 8 / 2**30
            guess = last[1] * (size / last[0]) ** 2 if last and graph == "paper" else None
            if graph == "paper" and dense_gib > opts.max_dense_gib:
                row.update(status="skipped", reason=f"dense {dense_gib:.3g} GiB per class > --max-dense-gib")
            elif guess is not None and guess > opts.max_seconds:
                row.update(status="skipped", reason=f"~{guess:.0f} s expected (x N^2) > --max-seconds")
            else:
                row.update(run_one(size, graph, args, opts.max_seconds))
                if row["status"] == "ok":
                    last = (size, row["seconds"])
            rows.append(row)
            print(f"{graph:>5} {size:>7}: {row['status']} {row.get('seconds', float('nan')):.1f} s {row['reason']}",
                  flush=True)

    table = pd.DataFrame(rows)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(opts.out, index=False)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; seconds = select_infodist "
          f"wall time; peak_rss_delta_mib = extra peak RSS during it")
    print(table.drop(columns=["dim", "ipc", "cpus", "memory_method"], errors="ignore").to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
