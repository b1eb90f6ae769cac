#!/usr/bin/env bash
# Install masklet, then track the girl in the clip shipped in the package with the bundled
# nano demo model (offline): writes masks, an overlay video and COCO JSON into ./masklet-demo.
# Uses the active virtual environment, or creates ./.venv.
set -euo pipefail
. "$(dirname "$0")/_env.sh"
python -m pip install -q -e .
masklet demo -o masklet-demo "$@"
if [ -n "${MASKLET_OWN_VENV:-}" ]; then
    echo "masklet is installed in ./.venv: run '. .venv/bin/activate' to use the masklet" \
         "command (or call .venv/bin/masklet)"
fi
