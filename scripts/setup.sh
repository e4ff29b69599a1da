#!/usr/bin/env bash
# Make the project's virtual environment (.venv) with everything it needs, once.
# Sourced by run_all.sh and scripts/test.sh; run it alone to set up without running anything.
#
# Order matters: torch 2.13.0 first (on a CPU-only machine pip then finds its CPU wheel and
# no later requirement pulls GBs of CUDA packages); medmnist without dependencies, since it
# requires torchvision, which breaks diffusers' model imports where no matching build exists;
# then the project itself with its notebook and test extras.
#
# Environment: PYTHON (interpreter for the venv, default python3), HISTODISTILL_VENV
# (default .venv), HISTODISTILL_TORCH (pip requirement for torch, default torch==2.13.0).
#
# Sourced (by run_all.sh, scripts/test.sh or your shell), it runs itself as a child process
# for the checks and installation, with strict options there, and only exports the venv into
# the caller: the caller's shell options stay as they were, and a failure returns instead
# of closing the caller's terminal.
if [ "${BASH_SOURCE[0]}" != "$0" ]; then
    bash "${BASH_SOURCE[0]}" || return
    export VIRTUAL_ENV="${HISTODISTILL_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}"
    export PATH="$VIRTUAL_ENV/bin:$PATH"
    return 0
fi
set -euo pipefail

_hd_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_hd_python="${PYTHON:-python3}"
_hd_venv="${HISTODISTILL_VENV:-$_hd_root/.venv}"
_hd_torch="${HISTODISTILL_TORCH:-torch==2.13.0}"
_hd_medmnist="medmnist>=3.0.2,<4"   # keep equal to the `pathmnist` extra in pyproject.toml

if ! "$_hd_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "histodistill needs Python >= 3.10; '$_hd_python' is $("$_hd_python" --version 2>&1)." >&2
    echo "Set PYTHON=/path/to/python3.11 (for example) and run again." >&2
    exit 1
fi

_hd_stamp="$(cat "$_hd_root/pyproject.toml" "$_hd_root/scripts/setup.sh" | sha256sum | cut -c1-16) $_hd_torch"
if [ ! -x "$_hd_venv/bin/python" ]; then
    echo "[setup] creating $_hd_venv"
    "$_hd_python" -m venv "$_hd_venv"
fi
if [ "$(cat "$_hd_venv/.histodistill-installed" 2>/dev/null)" != "$_hd_stamp" ]; then
    echo "[setup] installing into $_hd_venv (first run: a few minutes)"
    _hd_log="$_hd_venv/setup.log"
    _hd_pip() {
        if ! "$_hd_venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@" >>"$_hd_log" 2>&1; then
            echo "[setup] 'pip install $*' failed; the end of $_hd_log:" >&2
            tail -n 40 "$_hd_log" >&2
            exit 1
        fi
    }
    : > "$_hd_log"
    echo "[setup]   $_hd_torch";        _hd_pip "$_hd_torch"
    echo "[setup]   $_hd_medmnist (without its torchvision dependency)"; _hd_pip --no-deps "$_hd_medmnist"
    echo "[setup]   histodistill[notebooks,test]"; _hd_pip -e "$_hd_root[notebooks,test]"
    echo "$_hd_stamp" > "$_hd_venv/.histodistill-installed"
    echo "[setup] done"
fi
