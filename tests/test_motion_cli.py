"""`masklet video --motion`: the switch reaches both trackers, and they agree."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import require_data

import masklet.predictor.video as video_module
import masklet.tracking.streaming as streaming_module
from masklet.cli import main
from masklet.tracking.motion import MotionConfig


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The first 6 bedroom frames as a JPEG folder."""
    src = require_data("videos", "bedroom")
    out = tmp_path_factory.mktemp("clip") / "bedroom"
    out.mkdir()
    for i in range(6):
        (out / f"{i:05d}.jpg").symlink_to(src / f"{i:05d}.jpg")
    return out


def _spy(monkeypatch, module, name: str, seen: list) -> None:
    original = getattr(module, name)

    class Spy(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.motion)

    monkeypatch.setattr(module, name, Spy)


def _labels(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def test_video_motion_flag(monkeypatch, tmp_path, clip):
    seen: list = []
    _spy(monkeypatch, video_module, "VideoPredictor", seen)
    _spy(monkeypatch, streaming_module, "StreamingTracker", seen)
    runner = CliRunner()
    args = ["video", str(clip), "--prompt", "0:1:box=300,150,600,500", "--no-overlay",
            "--no-coco", "-q"]
    for extra, out in (([], "plain"), (["--motion"], "offline"), (["--motion", "--stream"],
                                                                    "stream")):
        result = runner.invoke(main, args + extra + ["-o", str(tmp_path / out)],
                               catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert seen == [None, MotionConfig(), MotionConfig()]
    offline, stream = _labels(tmp_path / "offline" / "bedroom"), _labels(tmp_path / "stream" /
                                                                            "bedroom")
    assert len(offline) == 6 and all(np.array_equal(a, b) for a, b in zip(offline, stream))
    assert any(labels.any() for labels in offline)
