"""Running the official EdgeTAM oracle (tests/edgetam_oracle.py) from the test process.

The oracle runs in a subprocess (its package is also named `sam2`); one call runs a list
of tasks on one randomly initialised model and returns their results together with the
model's state dict, which masklet then loads with strict=True.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgetam_oracle import REFERENCE

ORACLE = Path(__file__).resolve().parent / "edgetam_oracle.py"


def require_edgetam_reference() -> None:
    """Skip (saying why) when the EdgeTAM checkout or timm is missing."""
    if not (REFERENCE / "sam2" / "modeling" / "perceiver.py").is_file():
        pytest.skip(f"the official EdgeTAM code is not at {REFERENCE} "
                    "(set MASKLET_EDGETAM_REFERENCE)")
    try:
        import importlib.util

        found = importlib.util.find_spec("timm") is not None
    except ValueError:
        found = False
    if not found:
        pytest.skip("timm is not installed (pip install --no-deps timm; see the test extra)")


def run_oracle(tmp_dir: Path, image_size: int, tasks: list[dict], seed: int = 0,
               timeout: float = 1200) -> dict:
    """Run ``tasks`` in the oracle subprocess; returns {"state_dict": ..., i: result_i}."""
    require_edgetam_reference()
    job, out = tmp_dir / "job.pt", tmp_dir / "out.pt"
    torch.save({"image_size": image_size, "seed": seed, "out": str(out), "tasks": tasks}, job)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    # The oracle's own sys.path comes first in the child (set in edgetam_oracle.py).
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, str(ORACLE), str(job)], cwd=str(tmp_dir), env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"EdgeTAM oracle failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return torch.load(out, weights_only=False)
