"""Options and helpers shared by the subcommands: model choice, device, dtype, errors."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click
import torch

from masklet.checkpoint import CheckpointError, closest_preset, read_state_dict

# Errors that mean "the user's input is wrong": reported in one line, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, KeyError, FileNotFoundError, IndexError, CheckpointError,
)


class CliError(click.ClickException):
    """A one-line message and exit status 2 (bad input)."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"masklet: error: {self.format_message()}", err=True)


def one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def user_errors(fn):
    """Turn the library's input errors into `CliError` (one line, exit status 2)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except USER_ERRORS as exc:
            raise CliError(one_line(exc)) from exc
        except KeyboardInterrupt:
            click.echo("masklet: interrupted; no partial output was kept", err=True)
            sys.exit(130)

    return wrapper


def model_options(fn):
    """--model / --checkpoint / --device / --dtype."""
    options = [
        click.option("--model", "preset", default=None, metavar="PRESET",
                     help="Model preset (see `masklet info`). Default: the checkpoint's own "
                          "preset, or the bundled nano demo model when no checkpoint is given."),
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Official SAM 2 / 2.1 .pt file or a .safetensors file."),
        click.option("--device", default="auto", show_default=True,
                     help="cpu, cuda, cuda:N, mps or auto."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32",
                     show_default=True, help="Compute precision (bfloat16 uses autocast)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def resolve_device(name: str) -> torch.device:
    if name != "auto":
        try:
            return torch.device(name)
        except RuntimeError as exc:
            raise CliError(f"unknown device {name!r}: {exc}") from exc
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_model(preset: str | None, checkpoint: Path | None, device: str, quiet: bool = False):
    """Build the model the options describe (bundled nano model by default)."""
    from masklet.build import build_model
    from masklet.bundled import bundled_checkpoint, bundled_preset

    dev = resolve_device(device)
    if checkpoint is None and preset is None:
        path = bundled_checkpoint()
        if not quiet:
            click.echo("using the bundled nano demo model (small, for demonstration; pass "
                       "--checkpoint for an official SAM 2 model)", err=True)
        return build_model(bundled_preset(), checkpoint=path, device=dev)
    if checkpoint is None:
        raise CliError(f"--model {preset} needs --checkpoint (no weights can be downloaded)")
    state = read_state_dict(checkpoint)
    if preset is None:
        preset, exact = closest_preset(state)
        if not exact:
            raise CliError(f"{checkpoint} fits no known preset exactly (closest: {preset}); "
                           "pass --model")
    return build_model(preset, checkpoint=state, device=dev)


def autocast(device: torch.device, dtype: str):
    """bf16 autocast context when asked for, a no-op otherwise."""
    import contextlib

    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def parse_floats(text: str, count: int, what: str) -> list[float]:
    parts = text.replace(" ", "").split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise CliError(f"{what} {text!r} must be {count} comma-separated numbers") from None
    if len(values) != count:
        raise CliError(f"{what} {text!r} must be {count} comma-separated numbers")
    return values


def parse_point(text: str) -> tuple[float, float, int]:
    """'X,Y' (positive) or 'X,Y:L' with L = 1 positive, 0 negative."""
    xy, _, label = text.partition(":")
    x, y = parse_floats(xy, 2, "point")
    if label not in ("", "0", "1"):
        raise CliError(f"point {text!r}: label must be 1 (positive) or 0 (negative)")
    return x, y, int(label or 1)


def check_out_dir(path: Path, overwrite: bool) -> None:
    """Fail before any work when the output folder would be refused at the end."""
    if path.exists() and (not path.is_dir() or (any(path.iterdir()) and not overwrite)):
        raise CliError(f"output folder {path} exists and is not empty (use --overwrite)")
