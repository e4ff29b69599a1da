#!/usr/bin/env bash
# Run the whole test suite: unit tests, a smoke run of the pipeline, and nbval over every
# notebook in the smoke profile. The first run creates .venv (scripts/setup.sh).
# Everything the tests write goes to a temporary folder, never to figures/ or paper_results/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

work="$(mktemp -d "${TMPDIR:-/tmp}/histodistill-tests.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export HISTODISTILL_OUTPUT_ROOT="$work/out"
# One cache for the smoke run of the pipeline (tests/runner/test_smoke_pipeline.py) and nbval,
# which runs after it: nbval executes every notebook's code on the stages the smoke run built,
# instead of building them all a second time. Unit tests each keep a cache of their own.
export HISTODISTILL_TEST_CACHE="$work/cache"
export HISTODISTILL_CACHE="$work/cache"

# Notebooks for nbval: the jupytext sources as .ipynb, parameters set to the smoke profile.
python -m histodistill.runner --profile smoke --export "$work/nbval" >/dev/null

# One test process per CPU (pytest-xdist; HISTODISTILL_TEST_PROCESSES sets another count, 1
# runs them all in this process). The smoke run and the notebooks after it stay together in
# one process (tests/conftest.py); the other processes take the unit tests meanwhile.
processes="${HISTODISTILL_TEST_PROCESSES:-$(python -c 'from histodistill import machine; print(machine.available_cpus())')}"
side_by_side=()
if [ "$processes" -gt 1 ]; then
    side_by_side=(-n "$processes")
fi

# Unit and smoke tests first, then the notebooks in number order.
python -m pytest tests "$work/nbval" --nbval-lax -p no:cacheprovider "${side_by_side[@]}" "$@"
