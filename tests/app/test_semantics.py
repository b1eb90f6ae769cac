"""Paths, reads, edits and exports as a user expects them (issue 15, part H2).

Each test pins one defect that was found by hand: relative paths in every root, links
checked when a file is read, exact redo on tracked frames, resuming interrupted tracking,
the stale flag after undo, one COCO category per label, upload errors that name the
user's file, and the favicon.
"""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np

from conftest import require_data

from .conftest import app_client, copy_clip, wait_job
from .test_api import CLICK, label_map, opened, refused


# ------------------------------------------------------------------------ paths
def test_relative_paths_are_looked_up_in_every_root(make_service, root, tmp_path):
    second = tmp_path / "second"
    copy_clip(second / "other", 3)
    copy_clip(second / "clip", 2)  # also in the first root, with 8 frames
    svc = make_service(roots=[root, second])
    client = app_client(svc)
    other = client.post("/api/videos/open", json={"path": "other"})
    assert other.status_code == 201, other.text
    assert other.json()["num_frames"] == 3
    listing = client.get("/api/browse", params={"path": "other"})
    assert listing.status_code == 200, listing.text
    assert len(listing.json()["entries"]) == 3
    # A name in two roots opens the first root's, in the order the roots were given.
    assert client.post("/api/videos/open", json={"path": "clip"}).json()["num_frames"] == 8
    assert "no such file" in refused(client, svc, "POST", "/api/videos/open", 404,
                                     json={"path": "nowhere"})
    refused(client, svc, "POST", "/api/videos/open", 403, json={"path": "other/../../x"})
    refused(client, svc, "POST", "/api/videos/open", 403, json={"path": str(tmp_path)})


def test_a_frame_replaced_by_an_outside_link_is_refused(client, svc, root, tmp_path):
    vid = opened(client)
    assert client.get(f"/api/videos/{vid}/frames/3").status_code == 200
    outside = tmp_path / "secret.jpg"
    shutil.copy(root / "clip" / "00005.jpg", outside)
    frame = root / "clip" / "00004.jpg"
    frame.unlink()
    frame.symlink_to(outside)
    answer = client.get(f"/api/videos/{vid}/frames/4")
    assert answer.status_code == 403 and "00004.jpg" in answer.json()["detail"]
    assert str(tmp_path) not in answer.text
    # The model reads frames through the same check (a click, preparing a frame).
    refused(client, svc, "POST", f"/api/videos/{vid}/prompts", 403, json={**CLICK, "frame": 4})
    assert client.post(f"/api/videos/{vid}/frames/4/prepare").status_code == 403
    assert client.post(f"/api/videos/{vid}/prompts", json=CLICK).status_code == 200
    # A link inside the roots is fine, as when the folder was opened.
    frame.unlink()
    frame.symlink_to(root / "clip" / "00005.jpg")
    assert client.get(f"/api/videos/{vid}/frames/4").status_code == 200
    # A frame file deleted since: a clear 410, not a server error.
    (root / "clip" / "00006.jpg").unlink()
    gone = client.get(f"/api/videos/{vid}/frames/6")
    assert gone.status_code == 410 and "00006.jpg" in gone.json()["detail"]


def test_a_video_file_replaced_by_an_outside_link_is_refused(client, svc, root, tmp_path):
    video = root / "coffee.mp4"
    shutil.copy(require_data("videos", "coffee.mp4"), video)
    vid = client.post("/api/videos/open", json={"path": "coffee.mp4"}).json()["id"]
    outside = tmp_path / "other.mp4"
    shutil.copy(video, outside)
    video.unlink()
    video.symlink_to(outside)
    answer = client.get(f"/api/videos/{vid}/frames/0")
    assert answer.status_code == 403 and "coffee.mp4" in answer.json()["detail"]


# ---------------------------------------------------------------------- uploads
def test_upload_errors_name_the_users_file(client, svc):
    coffee = require_data("videos", "coffee.mp4").read_bytes()
    bad = {"holiday.mp4": b"just some text " * 200,
           "cut.mp4": coffee[: len(coffee) // 3],  # a truncated video
           "empty.mov": coffee[:16]}
    for name, data in bad.items():
        detail = refused(client, svc, "POST", "/api/videos/upload", 415,
                         files={"file": (name, data)})
        assert name in detail, detail
        for internal in ("upload-", "tmp", str(svc.data_dir)):
            assert internal not in detail, detail
    vid = opened(client)
    detail = refused(client, svc, "POST", f"/api/videos/{vid}/masks/import", 415,
                     files={"file": ("labels.png", b"not a png")}, data={"frame": 0})
    assert "labels.png" in detail


# ---------------------------------------------------------------------- exports
def test_coco_export_has_one_category_per_label(client, svc):
    vid = opened(client)
    url = f"/api/videos/{vid}"
    dog, cat = (client.post("/api/labels", json={"name": n}).json()["id"] for n in ("dog", "cat"))
    client.patch(f"{url}/objects/1", json={"name": "Rex", "label": dog})
    client.post(f"{url}/objects", json={"name": "Tom"})
    client.patch(f"{url}/objects/2", json={"label": cat})
    for obj, point in ((1, [400, 220]), (2, [230, 260])):
        assert client.post(f"{url}/prompts", json={**CLICK, "object": obj,
                                                   "points": [point]}).status_code == 200
    client.post(f"{url}/track", json={"direction": "forward", "max_frames": 2})
    assert wait_job(client, vid)["state"] == "done"
    coco = client.get(client.post(f"{url}/exports", json={"format": "coco"}).json()["url"])
    data = json.loads(coco.content)
    assert data["categories"] == [{"id": dog, "name": "dog"}, {"id": cat, "name": "cat"}]
    anns = data["annotations"]
    assert {a["track_id"] for a in anns} == {1, 2}
    assert all(a["category_id"] == {1: dog, 2: cat}[a["track_id"]] for a in anns)


# ------------------------------------------------------------------------- page
def test_favicon(client):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/")
    assert b"<svg" in icon.content


# ------------------------------------------------------------------------ edits
def _prompt_mask(client, vid: int, frame: int) -> np.ndarray:
    return label_map(client, vid, frame) == 1


def test_redo_on_a_tracked_frame_gives_back_the_same_mask(client, svc):
    vid = opened(client)
    url = f"/api/videos/{vid}"
    client.post(f"{url}/prompts", json=CLICK)
    client.post(f"{url}/track", json={"direction": "forward"})
    assert wait_job(client, vid)["state"] == "done"
    tracked = _prompt_mask(client, vid, 4)
    # One correction on a tracked frame, then a second click there.
    first = {**CLICK, "frame": 4, "points": [[700, 400]]}
    second = {**CLICK, "frame": 4, "points": [[150, 100]], "labels": [0]}
    client.post(f"{url}/prompts", json=first)
    after_first = _prompt_mask(client, vid, 4)
    client.post(f"{url}/prompts", json=second)
    after_second = _prompt_mask(client, vid, 4)
    assert not np.array_equal(after_first, tracked)
    assert not np.array_equal(after_second, after_first)
    for step, expected in (("undo", after_first), ("undo", tracked), ("redo", after_first),
                           ("redo", after_second), ("undo", after_first),
                           ("redo", after_second)):
        assert client.post(f"{url}/{step}").status_code == 200
        assert np.array_equal(_prompt_mask(client, vid, 4), expected), step
    # Tracking again between the edit and its undo / redo changes nothing either.
    client.post(f"{url}/track", json={"direction": "forward"})
    assert wait_job(client, vid)["state"] == "done"
    client.post(f"{url}/undo")
    assert np.array_equal(_prompt_mask(client, vid, 4), after_first)
    client.post(f"{url}/redo")
    assert np.array_equal(_prompt_mask(client, vid, 4), after_second)
    # The same after a restart (the model state is rebuilt from the database).
    svc.drop_runtime(vid)
    client.post(f"{url}/undo")
    assert np.array_equal(_prompt_mask(client, vid, 4), after_first)
    client.post(f"{url}/redo")
    assert np.array_equal(_prompt_mask(client, vid, 4), after_second)


def test_tracking_after_undo_and_redo_of_a_correction_is_unchanged(client, svc):
    """Undo then redo leaves the model as it was: tracking on gives the same masks."""
    correction = {**CLICK, "frame": 3, "points": [[700, 400]]}
    tracked = []
    for undo_redo in (False, True):
        vid = opened(client)
        url = f"/api/videos/{vid}"
        client.post(f"{url}/prompts", json=CLICK)
        client.post(f"{url}/track", json={"direction": "forward"})
        assert wait_job(client, vid)["state"] == "done"
        client.post(f"{url}/prompts", json=correction)
        if undo_redo:
            assert client.post(f"{url}/undo").status_code == 200
            assert client.post(f"{url}/redo").status_code == 200
        client.post(f"{url}/track", json={"direction": "forward", "start": 3})
        assert wait_job(client, vid)["state"] == "done"
        tracked.append([_prompt_mask(client, vid, f) for f in range(3, 8)])
    for frame, (plain, redone) in enumerate(zip(*tracked, strict=True), start=3):
        assert np.array_equal(plain, redone), f"frame {frame}"


# --------------------------------------------------------------------- tracking
def _tracked_masks(svc, vid: int) -> dict[tuple[int, int], str]:
    return {(f, o): rle for f, o, rle in svc.db.query(
        "SELECT frame, obj, rle FROM masks WHERE video_id = ? AND source = 'track'", (vid,))}


def _cancel_after(client, svc, vid: int, frames: int, body: dict) -> dict:
    """Start tracking and cancel it once `frames` frames are written; the job's end."""
    seen = threading.Event()

    def watch(job):  # runs in the worker thread, after each written frame
        if job.done >= frames:
            job.cancelled.set()
            seen.set()

    real = svc.tracker._write_frame

    def write(job, frame, masks):
        real(job, frame, masks)
        watch(job)

    svc.tracker._write_frame = write
    try:
        assert client.post(f"/api/videos/{vid}/track", json=body).status_code == 202
        assert seen.wait(60)
        return wait_job(client, vid)
    finally:
        del svc.tracker._write_frame


def test_track_resumes_a_cancelled_job(client, svc, monkeypatch):
    from masklet.app.runtime import VideoRuntime

    computed: list[int] = []
    real_track = VideoRuntime.track

    def counted(self, *args):
        for step in real_track(self, *args):
            computed.append(step[0])
            yield step

    monkeypatch.setattr(VideoRuntime, "track", counted)
    body = {"direction": "both"}
    # The same job uninterrupted, on a second copy of the clip: what resuming must give.
    whole = opened(client)
    client.post(f"/api/videos/{whole}/prompts", json={**CLICK, "frame": 3})
    client.post(f"/api/videos/{whole}/track", json=body)
    assert wait_job(client, whole)["done"] == 9  # 3..7 forward, 3..0 backward
    computed.clear()

    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json={**CLICK, "frame": 3})
    cut = _cancel_after(client, svc, vid, 3, body)
    assert (cut["state"], cut["done"], cut["total"]) == ("cancelled", 3, 9)
    kept = _tracked_masks(svc, vid)
    computed.clear()
    assert client.post(f"/api/videos/{vid}/track", json=body).status_code == 202
    final = wait_job(client, vid)
    # Only the frames not done before were computed (frame 3 again: the backward pass
    # starts on it), the kept ones untouched, and all as the uninterrupted run made them.
    assert computed == [6, 7, 3, 2, 1, 0]
    assert (final["state"], final["done"], final["total"], final["resumed"]) == ("done", 9, 9, 3)
    now = _tracked_masks(svc, vid)
    assert all(now[key] == rle for key, rle in kept.items())
    assert now == _tracked_masks(svc, whole)


def test_track_resumes_an_interrupted_job_after_a_restart(make_service, monkeypatch):
    from masklet.app.runtime import VideoRuntime

    svc = make_service()
    client = app_client(svc)
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    cut = _cancel_after(client, svc, vid, 4, {"direction": "forward"})
    assert cut["done"] == 4
    # A crash leaves the job 'running' in the file; the next start marks it interrupted.
    with svc.db.transaction() as conn:
        conn.execute("UPDATE jobs SET state = 'running'")
    kept = _tracked_masks(svc, vid)
    svc.close()
    svc = make_service()
    client = app_client(svc)
    assert client.get(f"/api/videos/{vid}/track").json()["state"] == "interrupted"

    computed: list[int] = []
    real_track = VideoRuntime.track

    def counted(self, *args):
        for step in real_track(self, *args):
            computed.append(step[0])
            yield step

    monkeypatch.setattr(VideoRuntime, "track", counted)
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward"})
    final = wait_job(client, vid)
    assert computed == [4, 5, 6, 7]
    assert (final["state"], final["done"], final["total"], final["resumed"]) == ("done", 8, 8, 4)
    now = _tracked_masks(svc, vid)
    assert all(now[key] == rle for key, rle in kept.items())
    assert set(now) == {(f, 1) for f in range(1, 8)}
    # The resumed frames follow the object as the whole run does (memory rebuilt from
    # the stored masks of the frames before): compare with tracking every frame again.
    resumed = [_prompt_mask(client, vid, f) for f in range(4, 8)]
    computed.clear()
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward", "resume": False})
    assert wait_job(client, vid)["state"] == "done" and computed == list(range(8))
    for frame, mask in zip(range(4, 8), resumed, strict=True):
        whole = _prompt_mask(client, vid, frame)
        iou = (mask & whole).sum() / max((mask | whole).sum(), 1)
        assert iou > 0.9, (frame, iou)


def test_changed_prompts_or_request_track_every_frame_again(client, svc, monkeypatch):
    from masklet.app.runtime import VideoRuntime

    computed: list[int] = []
    real_track = VideoRuntime.track

    def counted(self, *args):
        for step in real_track(self, *args):
            computed.append(step[0])
            yield step

    monkeypatch.setattr(VideoRuntime, "track", counted)
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    _cancel_after(client, svc, vid, 3, {"direction": "forward"})
    computed.clear()
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward", "max_frames": 4})
    assert wait_job(client, vid)["resumed"] == 0 and computed == [0, 1, 2, 3, 4]
    _cancel_after(client, svc, vid, 2, {"direction": "forward"})
    computed.clear()
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward", "resume": False})
    assert wait_job(client, vid)["resumed"] == 0 and computed == list(range(8))
    _cancel_after(client, svc, vid, 2, {"direction": "forward"})
    client.post(f"/api/videos/{vid}/prompts", json={**CLICK, "frame": 5})
    computed.clear()
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward"})
    assert wait_job(client, vid)["resumed"] == 0 and computed == list(range(8))


# ------------------------------------------------------------------------ stale
def test_undo_back_to_the_tracked_prompts_clears_stale(client, svc):
    vid = opened(client)
    url = f"/api/videos/{vid}"
    client.post(f"{url}/prompts", json=CLICK)
    client.post(f"{url}/track", json={"direction": "forward"})
    assert wait_job(client, vid)["state"] == "done"
    assert client.get(f"{url}/timeline").json()["stale"] == []
    client.post(f"{url}/prompts", json={**CLICK, "frame": 5, "points": [[700, 400]]})
    assert client.get(f"{url}/timeline").json()["stale"] == [1, 2, 3, 4, 6, 7]
    client.post(f"{url}/undo")
    assert client.get(f"{url}/timeline").json()["stale"] == []
    client.post(f"{url}/redo")
    assert client.get(f"{url}/timeline").json()["stale"] == [1, 2, 3, 4, 6, 7]
    client.post(f"{url}/undo")
    # Another click undone: back to the tracked prompts again. A clear and the same
    # click again make a new prompt (not the one tracked): stale.
    client.post(f"{url}/prompts", json={**CLICK, "points": [[300, 200]]})
    client.post(f"{url}/undo")
    assert client.get(f"{url}/timeline").json()["stale"] == []
    client.post(f"{url}/prompts/clear", json={"frame": 0, "object": 1})
    client.post(f"{url}/prompts", json=CLICK)  # the same click, but a new prompt
    assert client.get(f"{url}/timeline").json()["stale"] == list(range(1, 8))
