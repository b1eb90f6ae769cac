"""Shared test fixtures: the real data folder and the optional reference oracle."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def require_data(*parts: str) -> Path:
    """Return a path under ../shared/data, skipping the test (with the reason) when absent."""
    path = DATA_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real test data not found at {path} (the ../shared/data folder is absent)")
    return path


def require_reference():
    """Import the official `sam2` package (test-only oracle) or skip, saying why."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pytest.importorskip(
            "sam2", reason="reference oracle sam2==1.1.0 is not installed (see .ci/run)"
        )
