"""`masklet serve`: the local annotation app (page + API) on the loopback interface."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

from masklet.cli.checks import FiniteRange, check_creatable_dir
from masklet.cli.common import (
    CliError,
    CliFailure,
    load_model,
    model_options,
    resolve_device,
    user_errors,
)


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "masklet"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or a one-line error."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise CliError(f"cannot resolve --host {host!r}: {err.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {err.strerror} (try another --port)"
                       ) from None
    return sock


def _model_name(preset: str | None, checkpoint: Path | None, random_weights: bool) -> str:
    """How the page and the start-up line name the model."""
    if random_weights:
        return f"{preset} (random weights)"
    if checkpoint is None:
        return "masklet_nano (demo)"
    return preset or Path(checkpoint).name


def _announce(sock: socket.socket, model_name: str, device: str, service) -> None:
    """The start-up lines: where the app is, what it runs, how to stop it."""
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    if not _is_loopback(bound_host):
        click.echo(f"masklet: warning: listening on {bound_host}: anyone who can reach "
                   "this machine can use the app (it has no login)", err=True)
    click.echo(f"masklet: serving http://{shown}:{bound_port}/  (model {model_name} "
               f"on {resolve_device(device)}; data in {service.data_dir}; "
               f"roots: {', '.join(str(r) for r in service.policy.roots)})", err=True)
    click.echo("masklet: press Ctrl-C to stop; all work is saved as it is made", err=True)


def _run_until_stopped(server, sock: socket.socket, announce: Callable[[], None]) -> bool:
    """Announce the server and serve until it stops; True when Ctrl-C (SIGINT) stopped it.

    While uvicorn runs it handles SIGINT itself (a graceful shutdown) and then raises the
    signal again for the caller. A KeyboardInterrupt could then surface at any line after
    it, so a handler of ours takes the signal instead, before, during and after uvicorn's,
    installed before the "press Ctrl-C" line is printed.
    """
    interrupted = False

    def on_sigint(signum, frame) -> None:
        nonlocal interrupted
        interrupted = True
        server.should_exit = True  # also stops a server that is still starting

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main_thread else None
    try:
        announce()
        server.run(sockets=[sock])
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return interrupted


def _merge_labels(book, specs, path: Path) -> None:
    """Merge a `--labels` file (all or nothing) and say what changed."""
    try:
        added, updated = book.merge(specs)
    except ValueError as err:
        raise CliError(f"--labels {path}: {err}") from None
    click.echo(f"masklet: labels from {path}: {added} added, {updated} updated", err=True)


def _review_config(threshold: float | None):
    """The review hints' settings: the defaults, with `--review-threshold` when given."""
    from masklet.tracking.review import ReviewConfig

    return ReviewConfig() if threshold is None else ReviewConfig(threshold=threshold)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The app has no login: keep it on loopback.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port (0: any free port).")
@click.option("--roots", "roots", multiple=True, type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Folder whose videos and images may be opened by path "
              "(repeat for several). Default: the current folder.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the SQLite database, uploads and exports live. "
                   "Default: $XDG_DATA_HOME/masklet or ~/.local/share/masklet.")
@click.option("--max-upload-mb", type=click.FloatRange(min=0, min_open=True), default=500.0,
              show_default=True, help="Largest accepted upload.")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="Also answer requests whose Host is NAME (repeat for several), e.g. the "
                   "name a reverse proxy forwards. Loopback names and --host are always "
                   "allowed; any other Host is refused (DNS rebinding).")
@click.option("--max-json-mb", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Largest body of a JSON request (uploads: "
                                      "--max-upload-mb).")
@click.option("--max-points-per-prompt", type=click.IntRange(min=1), default=100,
              show_default=True, help="Most clicks in one prompt request.")
@click.option("--max-points-per-frame", type=click.IntRange(min=1), default=300,
              show_default=True, help="Most clicks kept for one object on one frame.")
@click.option("--model-wait-s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="How long a request waits for the model (busy with "
                                      "another) before it is answered 503.")
@click.option("--max-brush-points", type=click.IntRange(min=1), default=2000,
              show_default=True, help="Most points in one brush stroke.")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="A label set merged into the data folder's "
              "at start: a JSON list [{\"name\": ..., \"color\": \"#rrggbb\", \"yolo_id\": "
              "0}] or a text file with one name per line (existing names are updated).")
@click.option("--review-threshold", type=FiniteRange(0, 1), default=None,
              help="Review hints: flag a tracked frame when its 'needs review' score (0..1) "
                   "reaches this (default: masklet.tracking.review.ReviewConfig's).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True, help="How much the server logs.")
@model_options
@user_errors
def serve_cmd(host, port, roots, data_dir, max_upload_mb, allow_hosts, max_json_mb,
              max_points_per_prompt, max_points_per_frame, model_wait_s, max_brush_points,
              labels_file, review_threshold, log_level, preset, checkpoint, random_weights,
              device, dtype):
    """Start the annotation app: open the printed address in a browser."""
    try:
        import uvicorn

        from masklet.app.db import DataDirBusy
        from masklet.app.labels import LabelBook, parse_label_file
        from masklet.app.server import create_app
        from masklet.app.service import AnnotationService, AppConfig
    except ImportError as err:
        raise CliError(f"the app needs its extra dependencies ({err.name} is missing): "
                       "pip install 'masklet[app]'") from None

    data_dir = (data_dir or default_data_dir()).expanduser()
    check_creatable_dir(data_dir, "--data-dir")
    try:  # read before anything starts: a malformed file changes nothing
        label_specs = parse_label_file(labels_file) if labels_file is not None else []
    except ValueError as err:
        raise CliError(f"--labels: {err}") from None
    sock = bind(host, port)
    roots = list(roots) or [Path.cwd()]
    try:
        model = load_model(preset, checkpoint, device, random_weights=random_weights)
    except KeyboardInterrupt:
        sock.close()
        click.echo("masklet: interrupted before the server started", err=True)
        sys.exit(130)
    except BaseException:
        sock.close()
        raise
    config = AppConfig(data_dir=data_dir, roots=roots, max_upload_mb=max_upload_mb,
                       allowed_hosts=(host, *allow_hosts), max_json_mb=max_json_mb,
                       max_points_per_prompt=max_points_per_prompt,
                       max_points_per_frame=max_points_per_frame, model_wait_s=model_wait_s,
                       max_brush_points=max_brush_points,
                       review=_review_config(review_threshold),
                       bfloat16=dtype == "bfloat16",
                       model_name=_model_name(preset, checkpoint, random_weights),
                       demo_model=checkpoint is None and not random_weights)
    try:
        service = AnnotationService(config, model)
    except DataDirBusy as err:
        sock.close()
        raise CliError(str(err)) from None
    try:
        if label_specs:
            _merge_labels(LabelBook(service.db), label_specs, labels_file)
        server = uvicorn.Server(uvicorn.Config(create_app(service), log_level=log_level,
                                               timeout_graceful_shutdown=3))
        interrupted = _run_until_stopped(
            server, sock, lambda: _announce(sock, config.model_name, device, service))
    finally:
        service.close()
        sock.close()
    if not (server.started or interrupted):
        raise CliFailure("the server did not start (see the messages above)")
    click.echo(f"masklet: stopped; all work is saved in {service.data_dir}", err=True)
