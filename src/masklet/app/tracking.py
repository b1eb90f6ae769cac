"""Tracking jobs: propagation in a worker thread, each finished frame stored as it comes.

A job writes every tracked frame's masks and its own progress in one transaction, so a
crash keeps exactly the frames finished before it (the job is then marked
``interrupted`` at the next start). Cancelling stops after the frame being computed;
the frames already written stay. On a frame where an object has prompts the tracker
only echoes them, so its prompt mask (what the user made and saw, an imported mask
exactly as given) stays the one shown: no tracked mask is written there.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from masklet.app import store
from masklet.app.errors import AppError
from masklet.app.maskcodec import encode_rle
from masklet.app.runtime import FrameMasks, VideoRuntime

if TYPE_CHECKING:
    from masklet.app.service import AnnotationService

log = logging.getLogger("masklet.app")
DIRECTIONS = ("both", "forward", "backward")


@dataclass
class TrackJob:
    """One running propagation over a video.

    passes: (start frame, reverse) pairs run one after the other.
    version: the video version when the job started; its masks carry it, so a prompt
        changed later makes them stale.
    prompted: (frame, object) pairs with prompts, where no tracked mask is written.
    """

    id: int
    video_id: int
    direction: str
    passes: list[tuple[int, bool]]
    total: int
    version: int
    max_frames: int | None
    started_at: float
    prompted: set[tuple[int, int]] = field(default_factory=set)
    done: int = 0
    frame: int | None = None
    state: str = "running"
    error: str | None = None
    finished_at: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def as_json(self) -> dict:
        return {"id": self.id, "state": self.state, "direction": self.direction,
                "done": self.done, "total": self.total, "frame": self.frame,
                "error": self.error, "started_at": self.started_at,
                "finished_at": self.finished_at}

    def cancel_and_wait(self, timeout: float | None = None) -> None:
        self.cancelled.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)


def plan(direction: str, start: int, num_frames: int, max_frames: int | None
         ) -> tuple[list[tuple[int, bool]], int]:
    """(passes, frames in total) of a job, counted as `VideoPredictor` walks them."""
    if direction not in DIRECTIONS:
        raise AppError(400, f"direction must be one of {', '.join(DIRECTIONS)}")
    limit = num_frames if max_frames is None else max_frames
    passes, total = [], 0
    if direction in ("both", "forward"):
        passes.append((start, False))
        total += min(start + limit, num_frames - 1) - start + 1
    if direction in ("both", "backward") and start > 0:
        passes.append((start, True))
        total += start - max(start - limit, 0) + 1
    return passes, total


class Tracker:
    """Starts, runs and cancels the tracking jobs of an `AnnotationService`."""

    def __init__(self, svc: AnnotationService) -> None:
        self.svc = svc

    def start(self, video_id: int, direction: str = "both", start: int | None = None,
              max_frames: int | None = None, expected_version: int | None = None) -> dict:
        svc = self.svc
        if max_frames is not None and max_frames < 1:
            raise AppError(400, "max_frames must be at least 1")
        with svc.locked(video_id, expected_version) as row:
            if row["kind"] != "video":
                raise AppError(400, "images are segmented one by one; there is nothing to track")
            rt = svc.runtime(video_id)
            if not isinstance(rt, VideoRuntime) or not rt.has_prompts():
                raise AppError(400, "nothing to track: click an object on some frame first")
            if start is None:
                start = rt.first_prompted_frame()
            svc.check_frame(video_id, start)
            passes, total = plan(direction, start, row["num_frames"], max_frames)
            now = time.time()
            with svc.db.transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO jobs (video_id, state, direction, done, total, frame, "
                    "started_at) VALUES (?, 'running', ?, 0, ?, NULL, ?)",
                    (video_id, direction, total, now))
                store.record_event(conn, video_id, "track")
            job = TrackJob(int(cur.lastrowid), video_id, direction, passes, total,
                           row["version"], max_frames, now,
                           set(store.prompts_by_key(svc.db, video_id)))
            svc.register_job(job)
            job.thread = threading.Thread(target=self._run, args=(job, rt),
                                          name=f"masklet-track-{video_id}", daemon=True)
            job.thread.start()
        svc.hub.publish(video_id, "progress", {"job": job.as_json()})
        return job.as_json()

    def cancel(self, video_id: int) -> dict:
        svc = self.svc
        svc.video_row(video_id)
        job = svc.jobs.get(video_id)
        if job is not None:
            job.cancelled.set()
            return job.as_json()
        latest = store.latest_job(svc.db, video_id)
        if latest is None:
            raise AppError(404, f"video {video_id} was never tracked")
        return latest

    def current(self, video_id: int) -> dict | None:
        job = self.svc.jobs.get(video_id)
        return job.as_json() if job is not None else store.latest_job(self.svc.db, video_id)

    # ----------------------------------------------------------------- worker
    def _run(self, job: TrackJob, rt: VideoRuntime) -> None:
        svc = self.svc
        try:
            for start, reverse in job.passes:
                for frame, masks in rt.track(start, job.max_frames, reverse):
                    self._write_frame(job, frame, masks)
                    if job.cancelled.is_set():
                        break
                if job.cancelled.is_set():
                    job.state = "cancelled"
                    break
            else:
                job.state = "done"
        except Exception as err:  # a worker thread has nobody to raise to
            log.exception("tracking video %d failed", job.video_id)
            job.state, job.error = "failed", " ".join(str(err).split()) or type(err).__name__
            svc.drop_runtime(job.video_id)
        finally:
            self._finish(job)

    def _write_frame(self, job: TrackJob, frame: int, masks: FrameMasks) -> None:
        encoded = {obj: encode_rle(mask) for obj, mask in masks.items()
                   if (frame, obj) not in job.prompted}
        with self.svc.db.transaction() as conn:
            for obj, (rle, area) in encoded.items():
                store.put_mask(conn, job.video_id, frame, obj, "track", rle, area, job.version)
            conn.execute("UPDATE jobs SET done = done + 1, frame = ? WHERE id = ?",
                         (frame, job.id))
        job.done += 1
        job.frame = frame
        self.svc.hub.publish(job.video_id, "progress", {"job": job.as_json()})

    def _finish(self, job: TrackJob) -> None:
        svc = self.svc
        job.finished_at = time.time()
        version = None
        try:
            with svc.db.transaction() as conn:
                conn.execute("UPDATE jobs SET state = ?, error = ?, finished_at = ? WHERE id = ?",
                             (job.state, job.error, job.finished_at, job.id))
                version = store.bump_version(conn, job.video_id)
        except Exception:
            log.exception("could not record the end of tracking job %d", job.id)
        finally:
            svc.unregister_job(job)
        svc.hub.publish(job.video_id, "progress", {"job": job.as_json()})
        if version is not None:
            svc.changed(job.video_id, version, "track")
