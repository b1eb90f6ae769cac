#!/usr/bin/env bash
# Install masklet, then track an object through a video with the bundled nano demo
# model (offline): writes masks, an overlay video and COCO JSON into ./masklet-demo.
# Uses the active virtual environment, or creates ./.venv.
set -euo pipefail
. "$(dirname "$0")/_env.sh"
python -m pip install -q -e .
masklet demo -o masklet-demo "$@"
