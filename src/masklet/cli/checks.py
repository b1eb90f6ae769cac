"""Checks the subcommands run on their options before any work: devices, numbers, paths.

Everything here fails with a one-line `CliError` naming the option, so a bad value is
reported in the first second rather than as a traceback after a long run.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import click
import torch

from masklet.cli.common import CliError

DEVICE_KINDS = "cpu, cuda, cuda:N, mps or auto"


def check_device(name: str) -> torch.device | None:
    """The device `--device name` asks for (None for auto), or a `CliError` saying why
    this machine cannot give it: torch only finds out when the model is moved there."""
    if name == "auto":
        return None
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CliError(f"--device {name}: unknown device (use {DEVICE_KINDS})") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        _check_cuda(name, device)
    elif device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise CliError(f"--device {name} is not available: MPS needs a Mac with Apple "
                           "silicon and a PyTorch build with MPS (use --device cpu)")
    else:
        raise CliError(f"--device {name}: masklet runs on {DEVICE_KINDS}")
    return device


def _check_cuda(name: str, device: torch.device) -> None:
    if not torch.cuda.is_available():
        why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA GPU is visible")
        raise CliError(f"--device {name} is not available: {why} (use --device cpu)")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise CliError(f"--device {name} is not available: {count} CUDA GPU(s) are visible "
                       f"(cuda:0 to cuda:{count - 1})")


def device_callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Click callback of --device: checked while the options are parsed."""
    if value is not None:
        check_device(value)
    return value


class FiniteRange(click.FloatRange):
    """A `click.FloatRange` that also refuses nan and inf (a range check lets nan through)."""

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def check_new_file(path: Path, option: str) -> None:
    """An output file path must not be a folder, and its folder must be creatable."""
    if path.is_dir():
        raise CliError(f"{option} {path} is a folder; give a file name")
    check_creatable_dir(path.parent, option, path)


def check_creatable_dir(path: Path, option: str, shown: Path | None = None) -> None:
    """`path` is a folder or can be made one: no file in the way, writable first parent."""
    shown = path if shown is None else shown
    for parent in (path, *path.parents):
        if parent.exists():
            break
    if not parent.is_dir():
        raise CliError(f"{option} {shown}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK) and parent != path:
        raise CliError(f"{option} {shown}: cannot create folders in {parent} (permission "
                       "denied)")


def describe_os_error(exc: OSError) -> str:
    """'PATH: reason' for an error the operating system raised, else the message itself."""
    if exc.strerror and exc.filename is not None:
        where = str(exc.filename)
        if exc.filename2 is not None:
            where += f" -> {exc.filename2}"
        return f"{where}: {exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def check_image_path(path: Path) -> None:
    """IMAGE must not be a folder (a folder of frames is a video)."""
    if path.is_dir():
        raise CliError(f"{path} is a folder, not an image: pass an image file (for a folder "
                       "of video frames use `masklet video` or `masklet auto-video`)")
