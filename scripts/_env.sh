# Sourced by demo.sh and test.sh: enter the repository root and a virtual environment
# (the active one, or ./.venv, created on first use), with pip and torch installed.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
    [ -d .venv ] || python3 -m venv .venv
    # shellcheck disable=SC1091
    . .venv/bin/activate
    MASKLET_OWN_VENV=1  # activated here only: the caller's shell does not have it
fi
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
