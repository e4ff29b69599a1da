"""What this machine is, for the records that timings and shipped weights carry: figures
measured on one CPU model differ on another (speed, and the last digits of results)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU model (e.g. "AMD EPYC 7B13"), or the architecture where it is not known."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
