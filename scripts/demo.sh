#!/usr/bin/env bash
# Install masklet, then track an object through a video with the bundled nano demo
# model (offline): writes masks, an overlay video and COCO JSON into ./masklet-demo.
# Uses the active virtual environment, or creates ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -d .venv ] || python3 -m venv .venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e .
masklet demo -o masklet-demo "$@"
