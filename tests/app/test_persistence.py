"""Work survives a restart of the service; live events reach the page."""

from __future__ import annotations

import json
import threading

import httpx
import pytest

from .conftest import APP_HEADERS, app_client, live_server, wait_job
from .test_api import CLICK, label_map, opened


def snapshot(client, vid: int) -> dict:
    detail = client.get(f"/api/videos/{vid}").json()
    return {"objects": detail["objects"], "version": detail["version"],
            "can_undo": detail["can_undo"],
            "prompts": client.get(f"/api/videos/{vid}/prompts").json(),
            "timeline": client.get(f"/api/videos/{vid}/timeline").json(),
            "masks": [label_map(client, vid, f).tolist() for f in range(8)]}


def test_restart_keeps_everything_and_work_goes_on(make_service):
    first = make_service()
    client = app_client(first)
    vid = opened(client)
    client.patch(f"/api/videos/{vid}/objects/1", json={"name": "girl", "color": "#123456"})
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    client.post(f"/api/videos/{vid}/prompts", json={**CLICK, "points": [[100, 80]], "labels": [0]})
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward", "max_frames": 4})
    assert wait_job(client, vid)["state"] == "done"
    before = snapshot(client, vid)
    first.close()

    second = make_service()
    client = app_client(second)
    assert snapshot(client, vid) == before
    # The undo stack and the model state are rebuilt from the database.
    client.post(f"/api/videos/{vid}/undo")
    assert [p["labels"] for p in client.get(f"/api/videos/{vid}/prompts").json()["prompts"]] \
        == [[1]]
    result = client.post(f"/api/videos/{vid}/prompts", json={**CLICK, "frame": 6})
    assert result.status_code == 200
    client.post(f"/api/videos/{vid}/track", json={"direction": "both"})
    assert wait_job(client, vid)["state"] == "done"
    assert all(label_map(client, vid, f).shape == (540, 960) for f in range(8))


def test_interrupted_jobs_are_marked_at_start(make_service):
    svc = make_service()
    client = app_client(svc)
    vid = opened(client)
    with svc.db.transaction() as conn:
        conn.execute("INSERT INTO jobs (video_id, state, direction, done, total, started_at) "
                     "VALUES (?, 'running', 'both', 3, 8, 0)", (vid,))
    svc.close()
    again = app_client(make_service())
    job = again.get(f"/api/videos/{vid}").json()["track"]
    assert (job["state"], job["done"]) == ("interrupted", 3)


def _events(url: str, seen: list, stop: threading.Event) -> None:
    with httpx.stream("GET", url, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                seen.append((name, json.loads(line[6:])))
                done = name == "progress" and seen[-1][1]["job"]["state"] == "done"
                if done or stop.is_set():
                    return


def test_server_sent_events(svc):
    with live_server(svc) as base:
        http = httpx.Client(base_url=base, timeout=30, headers=APP_HEADERS)
        vid = http.post("/api/videos/open", json={"path": "clip"}).json()["id"]
        http.post(f"/api/videos/{vid}/objects", json={})
        seen: list = []
        stop = threading.Event()
        reader = threading.Thread(target=_events, args=(f"{base}/api/videos/{vid}/events",
                                                        seen, stop))
        reader.start()
        while not seen:
            reader.join(0.05)
        assert seen[0] == ("hello", {"version": 1, "job": None})
        http.post(f"/api/videos/{vid}/prompts", json=CLICK)
        http.post(f"/api/videos/{vid}/track", json={"direction": "forward"})
        reader.join(60)
        stop.set()
        assert not reader.is_alive()
        names = [n for n, _ in seen]
        assert ("changed", {"version": 2, "what": "prompt"}) in seen
        progress = [d["job"] for n, d in seen if n == "progress"]
        assert progress[0]["state"] == "running" and progress[-1]["done"] == 8
        assert names.index("changed") < names.index("progress")
        http.close()


def test_one_server_per_data_folder(make_service):
    from masklet.app.db import DataDirBusy

    first = make_service()
    with pytest.raises(DataDirBusy, match="another masklet server"):
        make_service()
    first.close()
    make_service()  # free again once the first one stopped
