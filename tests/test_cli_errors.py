"""The `masklet` command's answers to bad input: one line, the right exit status, no traceback.

Each test here is a defect a new user hit (issue 15): the command either printed a
traceback, checked an option only after the whole run, or said something misleading.
The inputs are tiny files made in a temporary folder; the model is the bundled nano
checkpoint passed explicitly, so the tests do not depend on `build_model`'s defaults.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import click
import numpy as np
import pytest
import torch
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


def _frame(i: int) -> np.ndarray:
    rgb = np.full((SIDE, SIDE, 3), 40, np.uint8)
    rgb[16 + i: 40 + i, 16:40] = (220, 60, 60)  # a red square moving down
    return rgb


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frames") / "clip"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(_frame(i)).save(folder / f"{i:05d}.jpg")
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
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_frame(i), format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(_frame(0)).save(path)
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
        ids = (_frame(i)[..., 0] > 100).astype(np.uint8)
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


# ----------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("content", [b"\x80\x02this is not a checkpoint" * 10,
                                     b"\x00this is not a checkpoint" * 10,
                                     pickle.dumps({"a": 1}, protocol=4)],
                         ids=["pickle-like", "binary", "plain-pickle"])
def test_corrupt_pt_does_not_pass_on_unsafe_advice(tmp_path, photo, content):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(content)
    line = error_line(invoke("image", photo, "-p", "5,5", "-o", tmp_path / "o",
                             "--checkpoint", bad))
    assert str(bad) in line and "weights_only" not in line, line


def test_pickle_with_code_is_refused_without_unsafe_advice(tmp_path, photo):
    path = tmp_path / "objects.pt"
    torch.save({"model": {"w": torch.ones(1)}, "extra": Fraction(1, 3)}, path)
    line = error_line(invoke("image", photo, "-p", "5,5", "-o", tmp_path / "o",
                             "--checkpoint", path))
    assert "weights_only" not in line and "Python objects" in line, line


def test_text_file_as_checkpoint(tmp_path, photo):
    fake = tmp_path / "fake.jpg"
    fake.write_text("hello, I am text\n")
    line = error_line(invoke("image", photo, "-p", "5,5", "-o", tmp_path / "o",
                             "--checkpoint", fake))
    assert f"{fake} is not a PyTorch or safetensors checkpoint" in line, line


def test_info_on_a_file_without_tensors(tmp_path):
    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    line = error_line(invoke("info", empty), code=1)
    assert f"no model weights in {empty}" in line, line


def test_wrong_preset_message_separates_its_clauses(tmp_path, photo, ckpt):
    line = error_line(invoke("image", photo, "-p", "5,5", "-o", tmp_path / "o",
                             "--checkpoint", ckpt, "--model", "tiny"))
    # The verdict first, then each difference as its own clause.
    assert "does not fit preset 'sam2.1_hiera_tiny'; it fits preset 'masklet_nano'. " \
        "Differences: missing keys " in line, line
    assert "; unexpected keys 4: " in line and "; shape mismatches " in line, line


# ----------------------------------------------------------------- auto
@pytest.mark.parametrize("option,value", [("--box-nms-thresh", "2"), ("--points-per-side", "0"),
                                          ("--points-per-batch", "0"), ("--min-area", "-1"),
                                          ("--pred-iou-thresh", "nan"), ("--crop-layers", "-1")])
def test_auto_errors_name_the_option(tmp_path, photo, ckpt, option, value):
    line = error_line(invoke("auto", photo, "-o", tmp_path / "o", "--checkpoint", ckpt,
                             option, value))
    assert option in line and "_" not in line.split(":", 2)[2].replace(str(tmp_path), ""), line


def test_auto_library_errors_are_mapped_to_options():
    from masklet.cli.auto import option_message

    text = "points_per_side=2 leaves no points in crop layer 3 (crop_n_layers)"
    assert option_message(text) == "--points-per-side=2 leaves no points in crop layer 3 " \
        "(--crop-layers)"


# ----------------------------------------------------------------- serve
def test_ctrl_c_on_serve_says_the_server_stopped(tmp_path, ckpt):
    pytest.importorskip("uvicorn")
    cmd = [sys.executable, "-c", "from masklet.cli import main; main()", "serve", "--port", "0",
           "--data-dir", str(tmp_path / "data"), "--checkpoint", ckpt]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
            if "press Ctrl-C" in line:
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert "no partial output" not in rest and "Traceback" not in rest, rest
    assert f"masklet: stopped; all work is saved in {tmp_path / 'data'}" in rest, rest
    assert proc.returncode == 0, rest


# ----------------------------------------------------------------- help
def _commands():
    return sorted(main.commands.items())


@pytest.mark.parametrize("name,command", _commands(), ids=[n for n, _ in _commands()])
def test_every_option_has_help(name, command):
    ctx = click.Context(command, info_name=name)
    missing = [p.name for p in command.get_params(ctx)
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not missing, f"masklet {name}: options without help: {missing}"
    # The docstring may name OUT only where an option or argument is shown as OUT.
    assert "OUT" not in (command.help or "") or any(
        p.metavar == "OUT" or p.name == "out" for p in command.params), command.help


def test_aliases_are_listed():
    from masklet.config import ALIASES

    rows = {line.split()[0]: line for line in invoke("info").output.splitlines() if line.strip()}
    for alias, target in ALIASES.items():
        assert alias in rows[target].replace(",", " ").split(), (alias, rows[target])
    model_help = invoke("image", "-h").output.split("--model", 1)[1].split("--checkpoint")[0]
    assert "tiny" in model_help and "masklet info" in model_help, model_help
