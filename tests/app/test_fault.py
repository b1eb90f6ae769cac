"""Fault test: `masklet serve` is SIGKILLed while tracking, then started again.

Every prompt and every frame the job finished before the kill must be in the database,
unchanged, after the restart; the job reads ``interrupted``; tracking again completes
and gives the same masks for the frames done before the kill (same prompts, same model).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import require_data

from .conftest import APP_HEADERS

FRAMES = 60


def start_server(data_dir: Path, root: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`masklet serve --port 0` in a child process; returns it and its base URL."""
    code = "from masklet.cli import main; main()"
    with open(log, "w") as err:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--port", "0", "--data-dir", str(data_dir),
             "--roots", str(root)],
            stderr=err, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    url = None
    while url is None:
        found = re.search(r"serving (http://127\.0\.0\.1:\d+)/", log.read_text())
        url = found.group(1) if found else None
        assert proc.poll() is None, f"the server exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    while True:  # the address is printed just before uvicorn starts answering
        try:
            httpx.get(url + "/api/info", timeout=5).raise_for_status()
            return proc, url
        except httpx.TransportError:
            assert time.monotonic() < deadline and proc.poll() is None, "no answer"
            time.sleep(0.1)


def db_state(data_dir: Path) -> dict:
    """Prompts, masks and jobs as the file holds them (read without the server)."""
    with sqlite3.connect(data_dir / "masklet.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {
            "actions": conn.execute("SELECT id, frame, obj, kind, points, labels, box, undone "
                                    "FROM actions ORDER BY id").fetchall(),
            "masks": {(f, o, s): rle for f, o, s, rle in conn.execute(
                "SELECT frame, obj, source, rle FROM masks")},
            "job": conn.execute("SELECT state, done, total FROM jobs ORDER BY id DESC").fetchone(),
        }


def test_kill_during_tracking_then_resume(tmp_path):
    videos = require_data("videos", "bedroom").parent
    data_dir = tmp_path / "data"
    proc, url = start_server(data_dir, videos, tmp_path / "first.log")
    try:
        http = httpx.Client(base_url=url, timeout=60, headers=APP_HEADERS)
        vid = http.post("/api/videos/open", json={"path": "bedroom"}).json()["id"]
        for _ in range(2):
            http.post(f"/api/videos/{vid}/objects", json={})
        prompts = [{"frame": 0, "object": 1, "points": [[400, 220]], "labels": [1]},
                   {"frame": 0, "object": 1, "points": [[120, 60]], "labels": [0]},
                   {"frame": 30, "object": 2, "box": [150, 120, 330, 500]}]
        for body in prompts:
            assert http.post(f"/api/videos/{vid}/prompts", json=body).status_code == 200
        listed = http.get(f"/api/videos/{vid}/prompts").json()
        assert http.post(f"/api/videos/{vid}/track", json={}).json()["total"] == FRAMES
        while (job := http.get(f"/api/videos/{vid}/track").json())["done"] < 8:
            assert job["state"] == "running", job
            time.sleep(0.02)
        shown = http.get(f"/api/videos/{vid}/masks/5").content
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        http.close()
    finally:
        if proc.poll() is None:
            proc.kill()

    killed = db_state(data_dir)
    state, done, total = killed["job"]
    assert state == "running" and 8 <= done < total, "the kill did not land mid-tracking"
    # Forward from frame 0: frames 0..done-1 finished, each for both objects, in one piece.
    prompted = {(0, 1), (30, 2)}
    tracked = {(f, o) for f, o, s in killed["masks"] if s == "track"}
    assert tracked == {(f, o) for f in range(done) for o in (1, 2)} - prompted
    assert len(killed["actions"]) == 3

    proc, url = start_server(data_dir, videos, tmp_path / "second.log")
    try:
        http = httpx.Client(base_url=url, timeout=60, headers=APP_HEADERS)
        job = http.get(f"/api/videos/{vid}").json()["track"]
        assert (job["state"], job["done"]) == ("interrupted", done)
        assert http.get(f"/api/videos/{vid}/prompts").json() == listed
        assert http.get(f"/api/videos/{vid}/masks/5").content == shown
        after = db_state(data_dir)
        assert after["actions"] == killed["actions"] and after["masks"] == killed["masks"]

        # Tracking again (over the frames done before, and a few more) works and gives the
        # same masks there: the kill lost nothing that tracking had finished.
        again = http.post(f"/api/videos/{vid}/track", json={"max_frames": done + 2})
        assert again.status_code == 202
        deadline = time.monotonic() + 300
        while (job := http.get(f"/api/videos/{vid}/track").json())["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert (job["state"], job["done"]) == ("done", done + 3)
        resumed = db_state(data_dir)["masks"]
        for f, o, s in killed["masks"]:
            assert resumed[(f, o, s)] == killed["masks"][(f, o, s)], (f, o, s)
        assert {(f, o) for f, o, s in resumed if s == "track"} == \
            {(f, o) for f in range(done + 3) for o in (1, 2)} - prompted
        http.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
