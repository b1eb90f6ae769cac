"""The `masklet` command's answers to bad checkpoints and options, Ctrl-C on `serve`, and
its help: one line, the right exit status, no traceback (see test_cli_errors.py)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from fractions import Fraction

import click
import pytest
import torch

from masklet.cli import main

from .conftest import error_line, invoke


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
