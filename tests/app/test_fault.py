"""Fault tests: `masklet serve` is SIGKILLed while tracking, or while brush strokes and
review marks are being saved, then started again.

Every prompt and every frame the job finished before the kill must be in the database,
unchanged, after the restart; the job reads ``interrupted``; tracking again completes
and gives the same masks for the frames done before the kill (same prompts, same model).
Every brush stroke and review mark the server acknowledged before the kill is kept,
each stroke whole (its action, its mask and its undo mask together).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from conftest import require_data

from .conftest import APP_HEADERS

FRAMES = 60


def start_server(data_dir: Path, root: Path, log: Path, extra: tuple[str, ...] = ()
                 ) -> tuple[subprocess.Popen, str]:
    """`masklet serve --port 0` (and `extra` options) in a child process; returns it and
    its base URL."""
    code = "from masklet.cli import main; main()"
    with open(log, "w") as err:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", "--port", "0", "--data-dir", str(data_dir),
             "--roots", str(root), *extra],
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


def stroke_points(k: int) -> list[list[float]]:
    """The k-th test stroke: a short zigzag somewhere inside the 960x540 frame."""
    x, y = 100 + (k * 97) % 700, 80 + (k * 53) % 380
    return [[x, y], [x + 40, y + 25], [x + 10, y + 60]]


def test_kill_while_saving_brush_strokes_and_review_marks(tmp_path):
    from pycocotools import mask as mask_utils

    from masklet.app.brush import stroke_mask

    videos = require_data("videos", "bedroom").parent
    data_dir = tmp_path / "data"
    labels = tmp_path / "labels.json"
    labels.write_text('[{"name": "person", "yolo_id": 0}, {"name": "bed"}]')
    extra = ("--labels", str(labels))
    proc, url = start_server(data_dir, videos, tmp_path / "first.log", extra)
    acked: list[tuple[int, int, int]] = []  # (action id, frame, stroke number)
    seen: list[int] = []  # frames whose review mark was acknowledged
    sent: list[tuple[str, int, int]] = []  # every request sent: (kind, frame, stroke number)
    failure: list[BaseException] = []
    try:
        http = httpx.Client(base_url=url, timeout=60, headers=APP_HEADERS)
        assert [lab["name"] for lab in http.get("/api/labels").json()["labels"]] == \
            ["person", "bed"]
        vid = http.post("/api/videos/open", json={"path": "bedroom"}).json()["id"]
        http.post(f"/api/videos/{vid}/objects", json={})

        def work() -> None:
            # Strokes on even frames, review marks on odd ones (an edit marks its frame too).
            try:
                for k in range(10_000):
                    frame = (2 * k) % FRAMES
                    sent.append(("brush", frame, k))
                    r = http.post(f"/api/videos/{vid}/brush", json={
                        "frame": frame, "object": 1, "mode": "paint", "radius": 15,
                        "points": stroke_points(k)})
                    r.raise_for_status()
                    acked.append((r.json()["action_id"], frame, k))
                    sent.append(("seen", frame + 1, k))
                    r = http.post(f"/api/videos/{vid}/review/seen",
                                  json={"frame": frame + 1, "object": 1})
                    r.raise_for_status()
                    seen.append(frame + 1)
            except BaseException as err:  # the kill ends the loop
                failure.append(err)

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        while len(acked) < 40 and worker.is_alive():
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        worker.join(60)
        http.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(acked) >= 40 and isinstance(failure[0], httpx.TransportError), failure

    with sqlite3.connect(data_dir / "masklet.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        actions = {i: (f, kind) for i, f, kind in conn.execute(
            "SELECT id, frame, kind FROM actions WHERE undone = 0")}
        undo_masks = dict(conn.execute("SELECT action_id, rle FROM action_masks"))
        prompt_masks = dict(conn.execute(
            "SELECT frame, rle FROM masks WHERE source = 'prompt' AND obj = 1"))
        reviewed = {f for (f,) in conn.execute("SELECT frame FROM reviewed WHERE obj = 1")}
    # Each acknowledged stroke is there whole; at most the one in flight is there too.
    assert {i: (f, "mask") for i, f, _ in acked}.items() <= actions.items()
    assert len(actions) - len(acked) <= 1 and set(actions) <= set(undo_masks)
    last_stroke = sent[-1][2]
    for frame in {f for _, f, _ in acked}:
        newest = max(i for i, (f, _) in actions.items() if f == frame)
        assert prompt_masks[frame] == undo_masks[newest], frame  # one transaction
        stored = mask_utils.decode({"size": [540, 960], "counts": prompt_masks[frame].encode()})
        strokes = [k for _, f, k in acked if f == frame]
        union = np.logical_or.reduce([stroke_mask(np.array(stroke_points(k), float), 15,
                                                  540, 960) for k in strokes])
        assert np.array_equal(stored.astype(bool) | union, stored.astype(bool)), frame
        extra_stroke = stroke_mask(np.array(stroke_points(last_stroke), float), 15, 540, 960)
        assert not (stored.astype(bool) & ~(union | extra_stroke)).any(), frame
    assert set(seen) <= reviewed and {f for _, f, _ in acked} <= reviewed

    proc, url = start_server(data_dir, videos, tmp_path / "second.log", extra)
    try:
        http = httpx.Client(base_url=url, timeout=60, headers=APP_HEADERS)
        assert len(http.get("/api/labels").json()["labels"]) == 2  # merged again, no copies
        listed = {p["id"] for p in http.get(f"/api/videos/{vid}/prompts").json()["prompts"]}
        # A frame's newest stroke is its prompt (a mask prompt replaces the ones before).
        newest_acked = {max(i for i, g, _ in acked if g == f) for _, f, _ in acked}
        assert newest_acked <= listed
        frame = acked[-1][1]
        shown = http.get(f"/api/videos/{vid}/masks/{frame}/rle").json()["objects"][0]
        assert shown["rle"]["counts"] == prompt_masks[frame]
        # The strokes go on being edits like any other: undo and redo after the restart.
        assert http.post(f"/api/videos/{vid}/undo").status_code == 200
        assert http.post(f"/api/videos/{vid}/redo").status_code == 200
        newest = max(actions)
        again = http.get(f"/api/videos/{vid}/masks/{actions[newest][0]}/rle").json()
        assert again["objects"][0]["rle"]["counts"] == undo_masks[newest]
        http.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
