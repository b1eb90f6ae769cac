"""Fixtures and helpers of the command-line tests: run `masklet` in-process, read its one
error line, and the tiny inputs they share (the bundled nano checkpoint, a photo of a
moving-square frame)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from masklet.bundled import bundled_checkpoint
from masklet.cli import main

SIDE = 64  # frame side of the generated clips (even, so libx264 takes it as is)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result, code: int = 2) -> str:
    """The single `masklet: error:` line of a failed run (and nothing like a traceback)."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        repr(result.exception))
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("masklet: error:")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def ckpt() -> str:
    return str(bundled_checkpoint())


def square_frame(i: int) -> np.ndarray:
    rgb = np.full((SIDE, SIDE, 3), 40, np.uint8)
    rgb[16 + i: 40 + i, 16:40] = (220, 60, 60)  # a red square moving down
    return rgb


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(square_frame(0)).save(path)
    return path
