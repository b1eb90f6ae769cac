"""The track request's motion-aware option (SAMURAI): on, off, refused, resumed, stored."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest
import torch

from masklet.app.db import Database
from masklet.app.maskcodec import decode_rle
from masklet.app.runtime import VideoRuntime
from masklet.predictor.video import VideoPredictor

from .conftest import app_client, wait_job
from .test_api import CLICK, opened, refused

FORWARD = {"direction": "forward"}


def _tracked(svc, vid: int) -> dict[int, np.ndarray]:
    """frame -> object 1's tracked mask [H, W] bool, as stored."""
    row = svc.db.query_one("SELECT width, height FROM videos WHERE id = ?", (vid,))
    return {f: decode_rle(rle, row["height"], row["width"]) for f, rle in svc.db.query(
        "SELECT frame, rle FROM masks WHERE video_id = ? AND source = 'track' AND obj = 1",
        (vid,))}


def _tracked_video(client, body: dict) -> int:
    """A fresh copy of the clip, clicked on frame 0 and tracked with `body` to the end."""
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    started = client.post(f"/api/videos/{vid}/track", json=body)
    assert started.status_code == 202, started.text
    assert started.json()["motion"] is bool(body.get("motion", False))
    job = wait_job(client, vid)
    assert job["state"] == "done", job
    return vid


def _filters(svc, vid: int) -> list:
    """Object 1's motion filter on each tracked frame of the video's session."""
    outputs = svc.runtime(vid).session.objects[1].non_cond_outputs
    return [outputs[f].motion for f in sorted(outputs)]


def test_track_with_motion_stores_the_motion_aware_masks(client, svc, root, nano):
    vid = _tracked_video(client, {**FORWARD, "motion": True})
    assert client.get(f"/api/videos/{vid}/track").json()["motion"] is True
    assert client.get(f"/api/videos/{vid}").json()["track"]["motion"] is True
    stored = _tracked(svc, vid)
    assert sorted(stored) == list(range(1, 8))
    # The session's filters ran (one per tracked frame), in this video's runtime only.
    assert all(state is not None for state in _filters(svc, vid))
    plain = _tracked_video(client, FORWARD)
    assert all(state is None for state in _filters(svc, plain))
    assert all(state is not None for state in _filters(svc, vid))
    # Exactly what the library gives: the click decoded by SAM 2 (as the app shows it),
    # then motion-aware propagation; and not what plain tracking gives on this clip.
    with torch.inference_mode():
        sam2 = VideoPredictor(nano, add_all_frames_to_correct_as_cond=True, progress=False)
        samurai = VideoPredictor(nano, add_all_frames_to_correct_as_cond=True, progress=False,
                                 motion=True)
        state = sam2.init_state(str(root / "clip"))
        sam2.add_new_points_or_box(state, 0, 1, points=CLICK["points"], labels=CLICK["labels"])
        direct = {f: (logits[0, 0] > 0).numpy()
                  for f, _, logits in samurai.propagate_in_video(state, 0)}
    for frame, mask in stored.items():
        assert np.array_equal(mask, direct[frame]), frame
    without = _tracked(svc, plain)
    assert any(not np.array_equal(stored[f], without[f]) for f in stored)


def test_motion_off_by_default_tracks_as_before(client, svc):
    default = _tracked_video(client, FORWARD)
    off = _tracked_video(client, {**FORWARD, "motion": False})
    for vid in (default, off):
        assert client.get(f"/api/videos/{vid}/track").json()["motion"] is False
        assert all(state is None for state in _filters(svc, vid))
    first, second = _tracked(svc, default), _tracked(svc, off)
    assert sorted(first) == sorted(second) == list(range(1, 8))
    for frame in first:
        assert np.array_equal(first[frame], second[frame]), frame


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None, [True]])
def test_a_motion_that_is_not_a_json_boolean_is_refused(client, svc, value):
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    detail = refused(client, svc, "POST", f"/api/videos/{vid}/track", 422,
                     json={**FORWARD, "motion": value})
    assert detail.startswith("motion:") and "\n" not in detail, detail
    assert client.get(f"/api/videos/{vid}/track").json() is None


def _cancelled_after(client, svc, vid: int, frames: int, body: dict) -> dict:
    """Track with `body` and cancel once `frames` frames are written; the job's end."""
    seen = threading.Event()
    real = svc.tracker._write_frame

    def write(job, frame, masks):  # runs in the worker thread
        real(job, frame, masks)
        if job.done >= frames:
            job.cancelled.set()
            seen.set()

    svc.tracker._write_frame = write
    try:
        assert client.post(f"/api/videos/{vid}/track", json=body).status_code == 202
        assert seen.wait(60)
        return wait_job(client, vid)
    finally:
        del svc.tracker._write_frame


@pytest.fixture
def computed(monkeypatch) -> list[tuple[int, bool]]:
    """(frame, motion) of every frame the runtimes track."""
    seen: list[tuple[int, bool]] = []
    real_track = VideoRuntime.track

    def counted(self, *args):
        motion = bool(args[3]) if len(args) > 3 else False
        for step in real_track(self, *args):
            seen.append((step[0], motion))
            yield step

    monkeypatch.setattr(VideoRuntime, "track", counted)
    return seen


@pytest.mark.parametrize("first", [False, True])
def test_resume_only_with_the_same_motion_option(client, svc, computed, first):
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    cut = _cancelled_after(client, svc, vid, 3, {**FORWARD, "motion": first})
    assert (cut["state"], cut["done"], cut["motion"]) == ("cancelled", 3, first)
    # The other option: a fresh job over every frame, whatever the cancelled one kept.
    computed.clear()
    client.post(f"/api/videos/{vid}/track", json={**FORWARD, "motion": not first})
    fresh = wait_job(client, vid)
    assert (fresh["state"], fresh["done"], fresh["resumed"], fresh["motion"]) == (
        "done", 8, 0, not first)
    assert computed == [(f, not first) for f in range(8)]
    # The same option resumes: only the frames after the cancelled ones are computed.
    cut = _cancelled_after(client, svc, vid, 3, {**FORWARD, "motion": first})
    computed.clear()
    client.post(f"/api/videos/{vid}/track", json={**FORWARD, "motion": first})
    resumed = wait_job(client, vid)
    assert (resumed["state"], resumed["done"], resumed["resumed"], resumed["motion"]) == (
        "done", 8, 3, first)
    assert computed == [(f, first) for f in range(3, 8)]


def test_a_motion_job_resumes_after_a_restart(make_service, computed):
    svc = make_service()
    client = app_client(svc)
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    assert _cancelled_after(client, svc, vid, 4, {**FORWARD, "motion": True})["done"] == 4
    svc.close()
    svc = make_service()
    client = app_client(svc)
    assert client.get(f"/api/videos/{vid}/track").json()["motion"] is True
    computed.clear()
    client.post(f"/api/videos/{vid}/track", json={**FORWARD, "motion": True})
    final = wait_job(client, vid)
    assert (final["state"], final["done"], final["resumed"], final["motion"]) == (
        "done", 8, 4, True)
    assert computed == [(f, True) for f in range(4, 8)]
    resumed = _tracked(svc, vid)
    assert sorted(resumed) == list(range(1, 8))
    # The memory rebuilt from the stored masks counts as reliable: the resumed frames
    # follow the object as tracking every frame again does.
    client.post(f"/api/videos/{vid}/track", json={**FORWARD, "motion": True, "resume": False})
    assert wait_job(client, vid)["state"] == "done"
    whole = _tracked(svc, vid)
    for frame in range(4, 8):
        a, b = resumed[frame], whole[frame]
        iou = (a & b).sum() / max((a | b).sum(), 1)
        assert iou > 0.9, (frame, iou)


def test_a_data_folder_made_before_the_motion_column_gets_it(tmp_path):
    path = tmp_path / "masklet.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE job_plans (job_id INTEGER PRIMARY KEY, start INTEGER NOT NULL, "
        "max_frames INTEGER, prompts TEXT NOT NULL, resumed INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO job_plans VALUES (1, 0, NULL, '{}', 0);")
    old.close()
    db = Database(path)
    try:
        assert [tuple(r) for r in db.query("SELECT job_id, motion FROM job_plans")] == [(1, 0)]
        Database(path).close()  # opening it again adds nothing twice
    finally:
        db.close()
