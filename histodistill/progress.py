"""Progress bars that reach the console however the pipeline runs.

In JupyterLab or a terminal, `tqdm` is tqdm's own (a widget or a redrawn line). Run by
``./run_all.sh`` without a terminal (CI, a log file, ``nohup``), a notebook's widget or
carriage-return updates never reach the log: papermill shows the first state, "0/1200",
for the whole stage. There the runner sets ``HISTODISTILL_PROGRESS=lines``, and every bar
prints a whole line (count, rate, time left) at most every `LINE_SECONDS` instead, which
papermill streams to the console.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm as _auto_tqdm
from tqdm.std import tqdm as _std_tqdm

MODE_VARIABLE = "HISTODISTILL_PROGRESS"
LINE_SECONDS = 30.0  # at most one line per bar this often (and one at the end)


class _Lines:
    """A stream for tqdm that turns each refresh into one whole line, without carriage returns."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip("\n")
        if text.strip():
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


class _LineBar(_std_tqdm):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("file", _Lines(sys.stdout))
        kwargs.setdefault("mininterval", LINE_SECONDS)
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 100)
        super().__init__(*args, **kwargs)


def tqdm(*args, **kwargs):
    """`tqdm.auto.tqdm`, or a bar of whole lines when ``HISTODISTILL_PROGRESS=lines``."""
    if os.environ.get(MODE_VARIABLE) == "lines":
        return _LineBar(*args, **kwargs)
    return _auto_tqdm(*args, **kwargs)
