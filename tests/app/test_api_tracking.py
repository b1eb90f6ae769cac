"""API routes that import masks, track, open image sets and measure: good and bad input;
bad input must answer 4xx and store nothing (the rest of the routes: test_api.py)."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from conftest import require_data

from .conftest import wait_job
from .test_api import CLICK, label_map, opened, refused


# ----------------------------------------------------------- import of masks
def _png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_import_masks(client, svc):
    vid = opened(client)
    url = f"/api/videos/{vid}/masks/import"
    labels = np.zeros((540, 960), np.uint8)
    labels[100:200, 100:300] = 255
    one = client.post(url, files={"file": ("m.png", _png(labels))}, data={"frame": 2, "object": 1})
    assert one.status_code == 200, one.text
    assert np.array_equal(label_map(client, vid, 2) == 1, labels > 0)
    labels[300:400, 500:600] = 3
    labels[labels == 255] = 2
    both = client.post(url, files={"file": ("m.png", _png(labels))}, data={"frame": 4})
    assert sorted(both.json()["objects"]) == [2, 3]
    assert [o["id"] for o in client.get(f"/api/videos/{vid}").json()["objects"]] == [1, 2, 3]
    assert np.array_equal(label_map(client, vid, 4), labels)
    client.post(f"/api/videos/{vid}/undo")  # one step for the whole import
    assert not label_map(client, vid, 4).any()

    small = np.ones((10, 10), np.uint8)
    assert "frame 2 is 960x540" in refused(client, svc, "POST", url, 400,
                                           files={"file": ("m.png", _png(small))},
                                           data={"frame": 2, "object": 1})
    empty = _png(np.zeros((540, 960), np.uint8))
    refused(client, svc, "POST", url, 400, files={"file": ("m.png", empty)},
            data={"frame": 2, "object": 1})
    jpeg = require_data("videos", "bedroom", "00000.jpg").read_bytes()
    refused(client, svc, "POST", url, 415, files={"file": ("m.png", jpeg)}, data={"frame": 2})
    refused(client, svc, "POST", url, 415, files={"file": ("m.png", b"nope")}, data={"frame": 2})
    good = _png(labels)
    refused(client, svc, "POST", url, 404, files={"file": ("m.png", good)},
            data={"frame": 9, "object": 1})
    refused(client, svc, "POST", url, 404, files={"file": ("m.png", good)},
            data={"frame": 2, "object": 8})
    refused(client, svc, "POST", url, 400, files={"file": ("m.png", good)})
    refused(client, svc, "POST", url, 400, files={"file": ("m.png", good)},
            data={"frame": "two"})


# ------------------------------------------------------------------ tracking
def test_track_cancel_and_conflicts(client, svc, monkeypatch):
    from masklet.app.runtime import VideoRuntime

    vid = opened(client)
    url = f"/api/videos/{vid}"
    refused(client, svc, "POST", f"{url}/track", 400, json={})  # no prompt yet
    client.post(f"{url}/prompts", json={**CLICK, "frame": 3})
    gate, stepped = threading.Event(), threading.Event()
    real_track = VideoRuntime.track

    def gated(self, *args):  # holds the job before it writes its second frame
        for i, step in enumerate(real_track(self, *args)):
            if i == 1:
                stepped.set()
                assert gate.wait(30)
            yield step

    monkeypatch.setattr(VideoRuntime, "track", gated)
    job = client.post(f"{url}/track", json={"direction": "both"})
    assert job.status_code == 202 and job.json()["total"] == 5 + 4
    assert stepped.wait(30)
    assert client.get(url).json()["tracking"]
    for method, path, body in (("POST", "/prompts", CLICK), ("POST", "/track", {}),
                               ("POST", "/undo", {}), ("DELETE", "/objects/1", None),
                               ("PATCH", "", {"name": "x"})):
        assert "tracking" in refused(client, svc, method, url + path, 409, json=body)
    assert client.get(f"{url}/masks/3").status_code == 200  # reads go on
    cancelled = client.post(f"{url}/track/cancel").json()
    assert cancelled["state"] == "running"  # stops after the frame in progress
    gate.set()
    final = wait_job(client, vid)
    assert final["state"] == "cancelled" and final["done"] == 2
    # The prompt mask of frame 3 (tracking does not overwrite it) and frame 4's.
    assert [tuple(r) for r in svc.db.query("SELECT frame, source FROM masks")] == [
        (3, "prompt"), (4, "track")]

    monkeypatch.setattr(VideoRuntime, "track", real_track)
    client.post(f"{url}/track", json={"direction": "forward", "max_frames": 2})
    assert wait_job(client, vid)["state"] == "done"
    timeline = client.get(f"{url}/timeline").json()
    assert timeline["prompted"] == {"3": [1]} and set(timeline["masked"]) <= {"3", "4", "5"}
    refused(client, svc, "POST", f"{url}/track", 422, json={"direction": "sideways"})
    refused(client, svc, "POST", f"{url}/track", 404, json={"start": 8})
    refused(client, svc, "POST", "/api/videos/77/track/cancel", 404)


def test_track_both_ways_then_correct(client, svc):
    vid = opened(client)
    url = f"/api/videos/{vid}"
    client.post(f"{url}/prompts", json={**CLICK, "frame": 3})
    job = client.post(f"{url}/track", json={}).json()
    assert job["total"] == 9
    done = wait_job(client, vid)
    assert done["state"] == "done" and done["done"] == 9
    rows = svc.db.query("SELECT frame FROM masks WHERE source = 'track'")
    assert sorted(r[0] for r in rows) == [0, 1, 2, 4, 5, 6, 7]  # frame 3 keeps its prompt
    client.post(f"{url}/prompts", json={**CLICK, "frame": 6, "points": [[600, 300]]})
    stale = client.get(f"{url}/timeline").json()["stale"]
    assert 6 not in stale and set(stale) == set(range(8)) - {3, 6}
    rle = client.get(f"{url}/masks/5/rle").json()["objects"][0]
    assert rle["source"] == "track" and rle["stale"]
    client.post(f"{url}/track", json={})
    assert wait_job(client, vid)["state"] == "done"
    assert client.get(f"{url}/timeline").json()["stale"] == []


def test_image_sets(client, svc, root):
    for name in ("truck.jpg", "groceries.jpg"):
        (root / "photos").mkdir(exist_ok=True)
        (root / "photos" / name).write_bytes(require_data("images", name).read_bytes())
    video = client.post("/api/videos/open", json={"path": "photos", "kind": "images"}).json()
    vid = video["id"]
    assert video["kind"] == "images" and video["num_frames"] == 2
    sizes = client.get(f"/api/videos/{vid}").json()["frame_sizes"]
    assert max(map(tuple, sizes)) == (1800, 1200)
    client.post(f"/api/videos/{vid}/objects", json={})
    result = client.post(f"/api/videos/{vid}/prompts",
                         json={"frame": 1, "object": 1, "points": [[900, 600]], "labels": [1]})
    assert result.status_code == 200 and isinstance(result.json()["score"], float)
    w, h = sizes[1]
    assert label_map(client, vid, 1).shape == (h, w)
    refused(client, svc, "POST", f"/api/videos/{vid}/track", 400, json={})
    refused(client, svc, "POST", f"/api/videos/{vid}/exports", 400, json={"format": "sav"})
    coco = client.post(f"/api/videos/{vid}/exports", json={"format": "coco"}).json()
    assert client.get(coco["url"]).json()["categories"] == [{"id": 0, "name": "unlabelled"}]


# ---------------------------------------------------------------- measures
def test_metrics(client, svc):
    vid = opened(client)
    url = f"/api/videos/{vid}"
    client.post(f"{url}/prompts", json={**CLICK, "points": [[400, 220], [300, 200]],
                                        "labels": [1, 1]})
    client.post(f"{url}/prompts", json={**CLICK, "points": [[100, 100]], "labels": [0]})
    client.post(f"{url}/prompts", json={"frame": 5, "object": 1, "box": [300, 0, 520, 400]})
    client.post(f"{url}/prompts/clear", json={"frame": 7, "object": 1})  # nothing there: no-op
    client.post(f"{url}/undo")  # undone clicks still count as effort
    m = client.get(f"{url}/metrics").json()
    v = m["video"]
    assert (v["clicks"], v["boxes"], v["clicked_frames"]) == (4, 1, 2)
    assert v["clicks_per_clicked_frame"] == 2.0
    assert v["edited_frames"] == 2 and v["edited_share"] == 2 / 8
    assert m["objects"]["1"]["clicks"] == 4 and m["num_frames"] == 8
    assert 0 <= v["annotation_time_s"] and v["time_per_frame_s"] == v["annotation_time_s"] / 8


def test_metrics_cap_idle_time(svc):
    from masklet.app import store
    from masklet.app.media import probe_path
    from masklet.app.metrics import video_metrics

    media = probe_path(svc.policy.resolve("clip"), None, svc.policy)
    with svc.db.transaction() as conn:
        vid = store.insert_video(conn, "clip", "path", media)
        svc.insert_object(conn, vid, 1)
        svc.insert_object(conn, vid, 2)
        conn.execute("DELETE FROM events")
        for t, obj, frame, clicks in ((0, 1, 0, 1), (10, 1, 0, 2), (100, 2, 4, 1), (105, 2, 4, 1)):
            conn.execute("INSERT INTO events (video_id, t, kind, obj, frame, clicks) "
                         "VALUES (?, ?, 'point', ?, ?, ?)", (vid, t, obj, frame, clicks))
    m = video_metrics(svc.db, vid, 8, idle_cap_s=30.0)
    assert m["video"]["annotation_time_s"] == pytest.approx(10 + 30 + 5)
    assert m["objects"]["1"]["annotation_time_s"] == pytest.approx(10)
    assert m["objects"]["2"]["annotation_time_s"] == pytest.approx(35)
    assert m["objects"]["2"]["clicks_per_clicked_frame"] == 2.0
    assert m["video"]["clicks"] == 5 and m["video"]["edited_share"] == 2 / 8
