#!/usr/bin/env bash
# Run the whole pipeline: every numbered notebook, in order, with papermill.
#
#   ./run_all.sh                                  # demo profile (the default)
#   ./run_all.sh --profile smoke                  # tiny, a few minutes
#   ./run_all.sh --profile paper                  # full PathMNIST, meant for a GPU box
#   ./run_all.sh --profile demo -p image_size 64  # any notebook parameter
#   ./run_all.sh --only 01                        # only notebooks whose names start with 01
#
# The first run creates .venv and installs everything (scripts/setup.sh).
# Executed notebooks go to outputs/<profile>/, figures to figures/<profile>/, tables to
# paper_results/<profile>/; stage results are cached in .cache/.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
exec python -m histodistill.runner "$@"
