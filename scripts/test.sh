#!/usr/bin/env bash
# Install masklet with its test dependencies (and the official sam2 package, the
# test-only reference oracle), then run the default test suite.
# Uses the active virtual environment, or creates ./.venv.
set -euo pipefail
. "$(dirname "$0")/_env.sh"
python -m pip install -q -e ".[test]"
# The torch-free ONNX tracker (its own distribution; tests compare it with masklet).
python -m pip install -q -e ./runtime
SAM2_BUILD_CUDA=0 python -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
# timm for the EdgeTAM oracle (tests/edgetam_oracle.py), without its torchvision dependency.
python -m pip install -q --no-deps "timm>=1.0"
python -m pytest "$@"
