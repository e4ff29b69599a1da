#!/usr/bin/env bash
# A reader in JupyterLab, in a headless browser: every notebook opens and closes without being
# marked unsaved, and a save without edits leaves its file's bytes as they are. Not part of
# ./scripts/test.sh (it needs a browser); the same checks without one are
# tests/runner/test_lab_contents.py. Needs Debian's chromium (apt install chromium) and Node.js:
#
#   ./tests/browser/check_jupyterlab.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
here=tests/browser
[ -d "$here/node_modules/playwright-core" ] || npm install --prefix "$here" --no-save --silent playwright-core
port=${PORT:-8931}
token=$(python3 -c 'import secrets; print(secrets.token_hex(8))')
log=$(mktemp)
./scripts/lab.sh --no-browser --allow-root --port "$port" --ServerApp.port_retries=0 \
    --ServerApp.token="$token" --expose-app-in-browser >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$port/api/status?token=$token" >/dev/null && break
    sleep 1
done
node "$here/open_and_save.js" "http://127.0.0.1:$port" "$token" notebooks/0*.py
git diff --exit-code --stat -- notebooks && echo "ok   every notebook's file is byte for byte as before"
