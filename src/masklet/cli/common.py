"""Options and helpers shared by the subcommands: model choice, device, dtype, errors."""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import torch

from masklet.checkpoint import CheckpointError

# Errors that mean "the user's input is wrong": reported in one line, exit status 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, KeyError, FileNotFoundError, IndexError, CheckpointError,
)


class CliError(click.ClickException):
    """A one-line message and exit status 2 (bad input)."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"masklet: error: {self.format_message()}", err=True)


class CliFailure(CliError):
    """A one-line message and exit status 1: the input was fine but the work failed."""

    exit_code = 1


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
        except OSError as exc:  # a folder in the way, permissions, a full disk, ...
            from masklet.cli.checks import describe_os_error

            raise CliFailure(describe_os_error(exc)) from exc
        except KeyboardInterrupt:
            click.echo("masklet: interrupted; no partial output was kept", err=True)
            sys.exit(130)

    return wrapper


@contextlib.contextmanager
def interrupt_requests() -> Iterator[threading.Event]:
    """Take Ctrl-C (SIGINT) as a request: the first one sets the event, a second one raises
    KeyboardInterrupt as usual.

    A library that checks for signals inside its own C++ loops (Ray does, while it waits)
    can swallow the KeyboardInterrupt that Python's default handler raises, so a long job
    polls this event instead. Outside the main thread no handler can be installed and the
    event is never set.
    """
    requested = threading.Event()

    def on_sigint(signum, frame) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        yield requested
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


def model_options(fn):
    """--model / --checkpoint / --random-weights / --device / --dtype."""
    options = [
        click.option("--model", "preset", default=None, metavar="PRESET",
                     help="Model preset or alias, e.g. sam2.1_hiera_tiny or tiny (see "
                          "`masklet info`). Default: the checkpoint's own preset, or the "
                          "bundled nano demo model when no checkpoint is given."),
        click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Official SAM 2 / 2.1 .pt file or a .safetensors file."),
        click.option("--random-weights", is_flag=True,
                     help="Build --model with untrained random weights (no checkpoint): for "
                          "speed tests; its masks mean nothing."),
        click.option("--device", default="auto", show_default=True, callback=_device_callback,
                     help="cpu, cuda, cuda:N, mps or auto."),
        click.option("--dtype", type=click.Choice(["float32", "bfloat16"]), default="float32",
                     show_default=True, help="Compute precision (bfloat16 uses autocast)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _device_callback(ctx, param, value):
    from masklet.cli.checks import device_callback

    return device_callback(ctx, param, value)


def resolve_device(name: str) -> torch.device:
    """The device --device names (checked: one this machine has), or the best one for auto."""
    from masklet.cli.checks import check_device

    device = check_device(name)
    if device is not None:
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_model(preset: str | None, checkpoint: Path | None, device: str, quiet: bool = False,
               random_weights: bool = False):
    """Build the model the options describe (bundled nano model by default)."""
    from masklet.build import MissingWeightsError, build_model

    if random_weights and checkpoint is not None:
        raise CliError("--random-weights and --checkpoint exclude each other")
    if random_weights and preset is None:
        raise CliError("--random-weights needs --model PRESET (see `masklet info`)")
    dev = resolve_device(device)
    try:
        model = build_model(preset, checkpoint, random_weights=random_weights, device=dev)
    except MissingWeightsError:
        raise CliError(f"--model {preset} needs --checkpoint FILE (no weights are downloaded), "
                       "or --random-weights for an untrained model") from None
    if not quiet and random_weights:
        click.echo(f"masklet: warning: {model.config.name} has random weights: its masks mean "
                   "nothing", err=True)
    elif not quiet and checkpoint is None:
        click.echo("using the bundled nano demo model (small, for demonstration; pass "
                   "--checkpoint for an official SAM 2 model)", err=True)
    return model


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
    if not all(math.isfinite(v) for v in values):
        raise CliError(f"{what} {text!r} must be finite numbers")
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
    if path.exists() and not path.is_dir():
        raise CliError(f"output path {path} is a file, not a folder (give a folder name)")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise CliError(f"output folder {path} exists and is not empty (use --overwrite)")
    from masklet.cli.checks import check_creatable_dir

    check_creatable_dir(path, "output folder")
