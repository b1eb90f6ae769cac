"""A served root with a synthetic clip for the browser tests of issue 19 (review, brush, labels).

`disc`: 24 frames (320x240 JPEG) of a red disc moving right over a fixed noise texture;
it is there on frames 0..13 and gone from frame 14 on, so tracking it from a click on
frame 0 gives frames the review score flags (the object-score logit drops and the mask
empties where the disc vanishes). The server is the real app with the bundled nano model.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masklet.app.service import AnnotationService, AppConfig
from masklet.bundled import bundled_preset

from .browser_kit import Server
from .conftest import live_server

WIDTH, HEIGHT = 320, 240
FRAMES = 24
GONE_FROM = 14  # the first frame without the disc
RADIUS = 30


def disc_centre(frame: int) -> tuple[float, float]:
    """(x, y) of the disc on `frame` (frame pixels), while it is there."""
    return 70.0 + 6.0 * frame, 120.0


def write_disc_clip(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(19)
    # A smooth grey texture (block noise upsampled), the same on every frame.
    blocks = rng.integers(70, 150, size=(HEIGHT // 16, WIDTH // 16, 1)).astype(np.uint8)
    texture = np.kron(blocks, np.ones((16, 16, 3), dtype=np.uint8))
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for frame in range(FRAMES):
        img = texture.copy()
        if frame < GONE_FROM:
            cx, cy = disc_centre(frame)
            img[(xx - cx) ** 2 + (yy - cy) ** 2 <= RADIUS**2] = (220, 30, 30)
        Image.fromarray(img).save(folder / f"{frame:05d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="module", name="disc_server")
def disc_server_fixture(nano) -> Iterator[Server]:
    """The app (nano model) serving a root that holds the `disc` clip."""
    work = Path(tempfile.mkdtemp(prefix="masklet-disc-"))
    write_disc_clip(work / "root" / "disc")
    config = AppConfig(data_dir=work / "data", roots=[work / "root"],
                       model_name=bundled_preset(), demo_model=True)
    service = AnnotationService(config, nano)
    try:
        with live_server(service) as url:
            yield Server(url, config.data_dir)
    finally:
        service.close()
        shutil.rmtree(work, ignore_errors=True)
