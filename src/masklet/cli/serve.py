"""`masklet serve`: the local annotation app (page + API) on the loopback interface."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import click

from masklet.cli.common import (
    CliError,
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
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True)
@model_options
@user_errors
def serve_cmd(host, port, roots, data_dir, max_upload_mb, log_level, preset, checkpoint, device,
              dtype):
    """Start the annotation app: open the printed address in a browser."""
    try:
        import uvicorn

        from masklet.app.db import DataDirBusy
        from masklet.app.server import create_app
        from masklet.app.service import AnnotationService, AppConfig
    except ImportError as err:
        raise CliError(f"the app needs its extra dependencies ({err.name} is missing): "
                       "pip install 'masklet[app]'") from None

    sock = bind(host, port)
    data_dir = (data_dir or default_data_dir()).expanduser()
    roots = list(roots) or [Path.cwd()]
    model = load_model(preset, checkpoint, device)
    config = AppConfig(data_dir=data_dir, roots=roots, max_upload_mb=max_upload_mb,
                       bfloat16=dtype == "bfloat16",
                       model_name=preset or ("masklet_nano (demo)" if checkpoint is None
                                             else Path(checkpoint).name),
                       demo_model=checkpoint is None and preset is None)
    try:
        service = AnnotationService(config, model)
    except DataDirBusy as err:
        sock.close()
        raise CliError(str(err)) from None
    try:
        server = uvicorn.Server(uvicorn.Config(create_app(service), log_level=log_level,
                                               timeout_graceful_shutdown=3))
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        if not _is_loopback(bound_host):
            click.echo(f"masklet: warning: listening on {bound_host}: anyone who can reach "
                       "this machine can use the app (it has no login)", err=True)
        click.echo(f"masklet: serving http://{shown}:{bound_port}/  (model {config.model_name} "
                   f"on {resolve_device(device)}; data in {service.data_dir}; "
                   f"roots: {', '.join(str(r) for r in service.policy.roots)})", err=True)
        click.echo("masklet: press Ctrl-C to stop; all work is saved as it is made", err=True)
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()
