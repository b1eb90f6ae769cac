"""Fixtures of the app tests: the bundled nano model, a short real clip, a fresh service.

Tests talk to the app over HTTP: in-process through FastAPI's TestClient, or through a
real uvicorn server on a free loopback port (`live_server`).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from conftest import require_data

pytest.importorskip("fastapi", reason="the app extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="httpx (test extra) is not installed")

from masklet.app.server import create_app
from masklet.app.service import AnnotationService, AppConfig

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's note about its httpx-based client
    from fastapi.testclient import TestClient

TABLES = ("videos", "objects", "actions", "masks", "jobs", "events")
# What the app's page sends with every request; the server refuses changes without it.
APP_HEADERS = {"X-Masklet": "1"}


def app_client(svc: AnnotationService, **kwargs) -> TestClient:
    """An in-process client that talks like the app's page: a loopback Host, the header."""
    return TestClient(create_app(svc), base_url="http://127.0.0.1",
                      headers={**APP_HEADERS, **kwargs.pop("headers", {})}, **kwargs)


@pytest.fixture(scope="session")
def nano():
    """The bundled nano demo model (256 px: clicks and tracking take milliseconds)."""
    from masklet.build import build_model
    from masklet.bundled import bundled_checkpoint, bundled_preset

    return build_model(bundled_preset(), checkpoint=bundled_checkpoint())


def copy_clip(dest: Path, frames: int) -> Path:
    """The first `frames` bedroom frames (960x540 JPEG) copied into `dest`."""
    src = require_data("videos", "bedroom")
    dest.mkdir(parents=True)
    for i in range(frames):
        shutil.copy(src / f"{i:05d}.jpg", dest / f"{i:05d}.jpg")
    return dest


@pytest.fixture
def root(tmp_path) -> Path:
    """The folder the test server may open paths in (holds an 8-frame clip)."""
    folder = tmp_path / "root"
    copy_clip(folder / "clip", 8)
    return folder


@pytest.fixture
def make_service(tmp_path, nano, root) -> Iterator[Callable[..., AnnotationService]]:
    """service(**config) -> an AnnotationService on tmp_path/data (closed after the test)."""
    made = []

    def make(**overrides) -> AnnotationService:
        config = {"data_dir": tmp_path / "data", "roots": [root]}
        config.update(overrides)
        svc = AnnotationService(AppConfig(**config), nano)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


@pytest.fixture
def svc(make_service) -> AnnotationService:
    return make_service()


@pytest.fixture
def client(svc) -> TestClient:
    return app_client(svc)


def counts(svc: AnnotationService) -> dict[str, int]:
    """Rows per table and files under uploads/ and tmp/: what 'nothing stored' compares."""
    out = {t: svc.db.query_one(f"SELECT COUNT(*) FROM {t}")[0] for t in TABLES}
    out["versions"] = svc.db.query_one("SELECT COALESCE(SUM(version), 0) FROM videos")[0]
    for sub in ("uploads", "tmp"):
        out[sub] = sum(1 for p in (svc.data_dir / sub).rglob("*") if p.is_file())
    return out


@contextmanager
def live_server(svc: AnnotationService) -> Iterator[str]:
    """A real uvicorn server for `svc` in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(create_app(svc), log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def wait_job(client, video_id: int, timeout: float = 120.0) -> dict:
    """Poll until the video's tracking job has ended; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/videos/{video_id}/track").json()
        if job is None or job["state"] != "running":
            return job
        assert time.monotonic() < deadline, f"tracking did not finish: {job}"
        time.sleep(0.05)
