"""Shared test fixtures: the real data folder and the optional reference oracle."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


# The slow suite's order: CI runs it after the default suite until its time is up, so the
# tests that cover the most per minute come first and the longest single runs last (the
# 1024 px video parity and EdgeTAM's 2,000 frames: each about 3 minutes on 2 CPU cores).
SLOW_ORDER = ("test_image_encoder", "test_presets", "test_streaming", "test_compile",
              "test_image_parity", "test_video_parity", "test_edgetam_parity",
              "test_motion_parity", "test_onnx_export", "test_onnx_tracker", "test_onnx_video",
              "test_video_parity[1024]", "test_edgetam")


@pytest.hookimpl(trylast=True)  # after pytest's own grouping by fixture parameters
def pytest_collection_modifyitems(items):
    """Put the slow tests in `SLOW_ORDER` (a stable sort: other tests keep their order)."""
    def rank(item) -> tuple[int, str]:
        if item.get_closest_marker("slow") is None:
            return -1, ""
        module, group = item.path.stem, ""
        if module == "test_video_parity":
            if "1024" in item.name:
                module = "test_video_parity[1024]"
            # It holds one predictor pair at a time (3-9 s to build): one size's tests together.
            group = item.callspec.id
        return (SLOW_ORDER.index(module) if module in SLOW_ORDER else len(SLOW_ORDER)), group

    items.sort(key=rank)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch intra-op thread for a module's tests (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): on a busy 2-core machine two threads
    contend and run far slower. The old count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def make_objects_present(model) -> None:
    """Random weights judge every object absent (all masks -1024), leaving nothing to
    compare: raise the object-score head's bias so that objects are present."""
    import torch

    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(1.0)


def _seeded_export(tmp_path_factory, preset: str, name: str, *, present: bool):
    """(model, export folder): ``preset`` at 256 px with seed-0 random weights, exported."""
    import torch

    from masklet import build_model, get_config
    from masklet.onnx import export_model

    torch.manual_seed(0)
    model = build_model(get_config(preset).with_image_size(256), random_weights=True).eval()
    if present:
        make_objects_present(model)
    out = tmp_path_factory.mktemp("onnx") / name
    export_model(model, out)
    return model, out


@pytest.fixture(scope="session")
def tiny256_onnx(tmp_path_factory):
    """(model, export folder): sam2.1_hiera_tiny at 256 px with seeded random weights
    (seed 0), exported with masklet.onnx.export_model once per test run (an export takes
    minutes) and shared by the ONNX test modules. Treat both as read-only."""
    return _seeded_export(tmp_path_factory, "sam2.1_hiera_tiny", "tiny256", present=False)


@pytest.fixture(scope="session")
def edgetam256_onnx(tmp_path_factory):
    """(model, export folder): the edgetam preset at 256 px with seeded random weights (seed
    0; objects made present), exported once per run for the slow suite's export and tracker
    tests. Treat both as read-only."""
    return _seeded_export(tmp_path_factory, "edgetam", "edgetam256", present=True)
