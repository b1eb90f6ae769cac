"""The `masklet` command's answers to bad input: one line, the right exit status, no traceback.

Each test here is a defect a new user hit (issue 15): the command either printed a
traceback, checked an option only after the whole run, or said something misleading.
The inputs are tiny files made in a temporary folder; the model is the bundled nano
checkpoint passed explicitly, so the tests do not depend on `build_model`'s defaults.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import SIDE, error_line, invoke, square_frame


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames") / "clip"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(square_frame(i)).save(folder / f"{i:05d}.jpg")
    return folder


@pytest.fixture(scope="module")
def ntsc_mp4(tmp_path_factory):
    """Four frames at 29.97 fps (30000/1001), the rate of the shared dog.mp4."""
    path = tmp_path_factory.mktemp("mp4") / "ntsc.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30000, 1001))
        stream.width = stream.height = SIDE
        stream.pix_fmt = "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(square_frame(i), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    """A ground-truth root and a matching prediction folder: one sequence of 5 frames."""
    root = tmp_path_factory.mktemp("davis")
    gt = root / "gt" / "Annotations" / "480p" / "seq"
    pred = root / "pred" / "seq"
    gt.mkdir(parents=True)
    pred.mkdir(parents=True)
    for i in range(5):
        ids = (square_frame(i)[..., 0] > 100).astype(np.uint8)
        im = Image.fromarray(ids, mode="P")
        im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        im.save(gt / f"{i:05d}.png")
        im.save(pred / f"{i:05d}.png")
    return root / "pred", root / "gt"


def _cpu_only(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


# ----------------------------------------------------------------- devices
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps"])
@pytest.mark.parametrize("command", ["image", "video", "auto", "auto-video", "serve"])
def test_missing_device_is_refused_up_front(monkeypatch, tmp_path, ckpt, command, device):
    _cpu_only(monkeypatch)
    # The input does not exist: the device is checked before anything else is looked at.
    before = {"image": ["image", tmp_path / "none.png", "-p", "1,1"],
              "video": ["video", tmp_path / "none", "--prompt", "0:1:point=1,1"],
              "auto": ["auto", tmp_path / "none.png"],
              "auto-video": ["auto-video", tmp_path / "none"],
              "serve": ["serve", "--port", "0", "--data-dir", tmp_path / "data"]}[command]
    out = [] if command == "serve" else ["-o", tmp_path / "out"]
    line = error_line(invoke(*before, *out, "--checkpoint", ckpt, "--device", device))
    assert f"--device {device}" in line and "not available" in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()


def test_unknown_device_name(ckpt, tmp_path, photo):
    line = error_line(invoke("image", photo, "-p", "1,1", "-o", tmp_path / "o",
                             "--checkpoint", ckpt, "--device", "gpu7"))
    assert "--device gpu7" in line


# ----------------------------------------------------------------- prompt files
PROMPT_FILES = [
    ("[1]", "prompt 0", "must be a JSON object"),
    ('[{"frame": 1e400, "obj": 1, "points": [[5, 5]]}]', "prompt 0", "frame"),
    ('[{"frame": 0.5, "obj": 1, "points": [[5, 5]]}]', "prompt 0", "frame"),
    ('[{"frame": 0, "obj": 1, "points": [[5, 5]], "labels": [2]}]', "prompt 0", "label"),
    ('[{"frame": 0, "obj": 1, "points": [[5, 5]], "labels": [1, 0]}]', "prompt 0", "labels"),
    ('[{"frame": 0, "obj": 1, "points": [[5, NaN]]}]', "prompt 0", "finite"),
    ('[{"frame": 0, "obj": 1, "box": [1, 1, 9, 9]}, 7]', "prompt 1", "must be a JSON object"),
]


@pytest.mark.parametrize("text,where,problem", PROMPT_FILES)
def test_bad_prompt_file(tmp_path, frames, ckpt, text, where, problem):
    path = tmp_path / "prompts.json"
    path.write_text(text)
    line = error_line(invoke("video", frames, "--prompts", path, "-o", tmp_path / "out",
                             "--checkpoint", ckpt))
    assert str(path) in line and where in line and problem in line, line
    assert not (tmp_path / "out").exists()


def test_prompt_file_that_is_a_folder(tmp_path, frames, ckpt):
    line = error_line(invoke("video", frames, "--prompts", tmp_path, "-o", tmp_path / "out",
                             "--checkpoint", ckpt))
    assert str(tmp_path) in line and "folder" in line, line


def test_inline_prompt_with_non_finite_number(tmp_path, frames, ckpt):
    line = error_line(invoke("video", frames, "--prompt", "0:1:point=nan,3", "-o",
                             tmp_path / "out", "--checkpoint", ckpt))
    assert "finite" in line, line


# ----------------------------------------------------------------- output paths
def test_eval_csv_that_is_a_folder(tmp_path, davis):
    pred, gt = davis
    line = error_line(invoke("eval", pred, gt, "--csv", tmp_path))
    assert str(tmp_path) in line and "folder" in line, line


def test_atomic_write_onto_a_folder_names_it(tmp_path):
    from masklet.export.atomic import atomic_write

    with pytest.raises(IsADirectoryError) as info:
        with atomic_write(tmp_path, "w") as f:
            f.write("x")
    assert str(info.value) == f"cannot write the file {tmp_path}: it is a folder"
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_serve_data_dir_under_a_file(tmp_path, ckpt):
    line = error_line(invoke("serve", "--port", "0", "--data-dir", "/dev/null/x",
                             "--checkpoint", ckpt))
    assert "--data-dir /dev/null/x" in line and "/dev/null is not a folder" in line, line


def test_output_path_that_is_a_file(tmp_path, photo, ckpt):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    for extra in ([], ["--overwrite"]):
        line = error_line(invoke("image", photo, "-p", "5,5", "-o", taken, "--checkpoint", ckpt,
                                 *extra))
        assert f"output path {taken} is a file, not a folder" in line, line
    assert taken.read_text() == "mine"


def _huge_png(path: Path) -> Path:
    """A 20000x10000 PNG of about 25 KB, more pixels than Pillow decodes."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        Image.new("1", (20000, 10000)).save(path, optimize=True)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    return path


def test_image_of_too_many_pixels(tmp_path, ckpt):
    """Pillow refuses to decode it: one line, no traceback (it was a DecompressionBombError
    traceback; `masklet eval` below too)."""
    huge = _huge_png(tmp_path / "huge.png")
    line = error_line(invoke("image", huge, "-p", "5,5", "-o", tmp_path / "o",
                             "--checkpoint", ckpt))
    assert f"cannot read image {huge}" in line and "exceeds limit" in line, line
    assert not (tmp_path / "o").exists()


def test_image_that_is_a_folder(tmp_path, frames, ckpt):
    line = error_line(invoke("image", frames, "-p", "5,5", "-o", tmp_path / "o",
                             "--checkpoint", ckpt))
    assert f"{frames} is a folder" in line and "masklet video" in line, line


# ----------------------------------------------------------------- frame rates
@pytest.mark.parametrize("fps", ["-5", "0", "nan", "inf"])
@pytest.mark.parametrize("command", ["video", "auto-video"])
def test_bad_fps_is_refused_before_the_run(tmp_path, frames, ckpt, command, fps):
    prompt = ["--prompt", "0:1:point=20,20"] if command == "video" else []
    line = error_line(invoke(command, frames, *prompt, "-o", tmp_path / "out", "--fps", fps,
                             "--checkpoint", ckpt))
    assert "--fps" in line, line
    assert not (tmp_path / "out").exists()


def _rate(path) -> Fraction:
    with av.open(str(path)) as container:
        return Fraction(container.streams.video[0].average_rate)


def test_overlay_keeps_the_source_frame_rate(tmp_path, ntsc_mp4, frames, ckpt):
    run = ["--prompt", "0:1:point=28,28", "--checkpoint", ckpt, "-q", "--no-coco"]
    result = invoke("video", ntsc_mp4, *run, "-o", tmp_path / "a")
    assert result.exit_code == 0, result.output
    assert _rate(tmp_path / "a" / "overlay.mp4") == Fraction(30000, 1001)
    result = invoke("video", frames, *run, "-o", tmp_path / "b")  # a folder has no rate
    assert result.exit_code == 0, result.output
    assert _rate(tmp_path / "b" / "overlay.mp4") == 24
    result = invoke("video", ntsc_mp4, *run, "-o", tmp_path / "c", "--fps", "10")
    assert _rate(tmp_path / "c" / "overlay.mp4") == 10


def test_stream_prints_a_completion_line(tmp_path, frames, ckpt):
    result = invoke("video", frames, "--prompt", "0:1:point=28,28", "--stream", "--no-overlay",
                    "-o", tmp_path / "s", "--checkpoint", ckpt)
    assert result.exit_code == 0, result.output
    assert f"tracked 1 object(s) over 4 frames; wrote {tmp_path / 's'}/" in result.output


# ----------------------------------------------------------------- eval
@pytest.mark.parametrize("value", ["-1", "0", "nan", "inf"])
def test_eval_bound_th_out_of_range(davis, value):
    pred, gt = davis
    assert "--bound-th" in error_line(invoke("eval", pred, gt, "--bound-th", value))


def test_eval_of_a_mask_of_too_many_pixels(tmp_path, davis):
    pred = tmp_path / "pred"
    shutil.copytree(davis[0], pred)
    _huge_png(pred / "seq" / "00002.png")
    line = error_line(invoke("eval", pred, davis[1]))
    assert f"cannot read mask PNG {pred / 'seq' / '00002.png'}" in line, line


def test_eval_of_an_empty_prediction_folder(tmp_path, davis):
    _, gt = davis
    empty = tmp_path / "pred"
    empty.mkdir()
    line = error_line(invoke("eval", empty, gt, "--csv", tmp_path / "jf.csv"))
    assert f"no predicted masks in {empty}" in line, line
    (empty / "other").mkdir()
    Image.new("P", (SIDE, SIDE)).save(empty / "other" / "00000.png")
    line = error_line(invoke("eval", empty, gt))
    assert "none of the ground-truth sequences (seq)" in line, line
    assert not (tmp_path / "jf.csv").exists()
