#!/usr/bin/env bash
# JupyterLab on this project, from the repository root (so figures/ and paper_results/ are
# browsable), with the project's environment, and with the notebooks' .py files opening as
# notebooks on a double click (jupytext's viewer) instead of in the text editor.
#
#   ./scripts/lab.sh            # any jupyter lab option may follow
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# JupyterLab reads overrides.json from <environment>/share/jupyter/lab/settings: this
# changes the default viewer for this project's environment only, not your own settings.
settings="$VIRTUAL_ENV/share/jupyter/lab/settings"
mkdir -p "$settings"
cat > "$settings/overrides.json" <<'JSON'
{
  "@jupyterlab/docmanager-extension:plugin": {
    "defaultViewers": {"python": "Jupytext Notebook"}
  }
}
JSON
# The project's contents manager: jupytext's, serving each text notebook with the language
# information its kernel reports, so that opening a notebook changes nothing in it.
exec jupyter lab --ServerApp.contents_manager_class=histodistill.lab_contents.NotebookContents "$@"
