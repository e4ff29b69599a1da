#!/usr/bin/env bash
# Run the whole pipeline: every numbered notebook, in order, with papermill.
#
#   ./run_all.sh --run-name mine --compare-to demo  # the demo, beside the committed one, then compared
#   ./run_all.sh                                    # the demo, rewriting the committed figures/demo/
#   ./run_all.sh --profile smoke                    # tiny, a few minutes
#   ./run_all.sh --profile paper -p processes 4     # full PathMNIST on a GPU box (here 4 GPUs)
#   ./run_all.sh --run-name px64 -p image_size 64   # any notebook parameter, under its own name
#   ./run_all.sh --run-name mine --distill ~/patches  # own images to a shareable set and its audit
#   ./run_all.sh --only 01                          # only notebooks whose names start with 01
#
# The first run creates .venv and installs everything (scripts/setup.sh).
# Executed notebooks go to outputs/<run name>/, figures to figures/<run name>/, tables to
# paper_results/<run name>/ (the run name defaults to the profile); stage results are cached in .cache/.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
exec python -m histodistill.runner "$@"
