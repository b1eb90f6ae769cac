"""Tracking jobs: propagation in a worker thread, each finished frame stored as it comes.

A job writes every tracked frame's masks and its own progress in one transaction, so a
crash keeps exactly the frames finished before it (the job is then marked
``interrupted`` at the next start). Cancelling stops after the frame being computed;
the frames already written stay. On a frame where an object has prompts the tracker
only echoes them, so its prompt mask (what the user made and saw, an imported mask
exactly as given) stays the one shown: no tracked mask is written there.

Tracking again after a job was cancelled or cut off (``interrupted``) resumes it when
nothing it depends on changed (same prompts, same direction, start, frame budget and
motion option):
the frames it finished are kept and it goes on from the next one. When the model state
that held its memory is gone (a restart), the memory of the frames just before that one
is rebuilt from their stored masks (`VideoRuntime.seed_memory`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from masklet.app import store
from masklet.app.errors import AppError
from masklet.app.maskcodec import decode_rle, encode_rle
from masklet.app.review import ReviewRecorder, store_rows
from masklet.app.runtime import FrameMasks, VideoRuntime

if TYPE_CHECKING:
    from masklet.app.service import AnnotationService

log = logging.getLogger("masklet.app")
DIRECTIONS = ("both", "forward", "backward")


@dataclass
class TrackJob:
    """One running propagation over a video.

    passes: (start frame, reverse, frame count) run one after the other.
    version: the video version when the job started; its masks carry it, so a prompt
        changed later makes them stale.
    prompted: (frame, object) pairs with prompts, where no tracked mask is written.
    motion: motion-aware tracking (SAMURAI) asked for.
    """

    id: int
    video_id: int
    direction: str
    passes: list[Pass]
    total: int
    version: int
    max_frames: int | None
    started_at: float
    prompted: set[tuple[int, int]] = field(default_factory=set)
    motion: bool = False
    done: int = 0
    resumed: int = 0  # frames kept from the job this one resumes (counted in `done`)
    seed: dict[int, dict] | None = None  # frame -> stored masks to rebuild memory from
    review: ReviewRecorder | None = None  # scores each written frame (app/review.py)
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
                "finished_at": self.finished_at, "resumed": self.resumed,
                "motion": self.motion}

    def cancel_and_wait(self, timeout: float | None = None) -> None:
        self.cancelled.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)


Pass = tuple[int, bool, int]  # (start frame, reverse, frames to compute)


def plan(direction: str, start: int, num_frames: int, max_frames: int | None
         ) -> tuple[list[Pass], int]:
    """(passes, frames in total) of a job, counted as `VideoPredictor` walks them."""
    if direction not in DIRECTIONS:
        raise AppError(400, f"direction must be one of {', '.join(DIRECTIONS)}")
    limit = num_frames if max_frames is None else max_frames
    passes = []
    if direction in ("both", "forward"):
        passes.append((start, False, min(start + limit, num_frames - 1) - start + 1))
    if direction in ("both", "backward") and start > 0:
        passes.append((start, True, start - max(start - limit, 0) + 1))
    return passes, sum(count for _, _, count in passes)


def remaining(passes: list[Pass], done: int) -> list[Pass]:
    """The passes left once the first `done` frames of `passes` are computed."""
    out = []
    for start, reverse, count in passes:
        if done >= count:
            done -= count
            continue
        out.append((start - done if reverse else start + done, reverse, count - done))
        done = 0
    return out


class Tracker:
    """Starts, runs and cancels the tracking jobs of an `AnnotationService`."""

    def __init__(self, svc: AnnotationService) -> None:
        self.svc = svc

    def start(self, video_id: int, direction: str = "both", start: int | None = None,
              max_frames: int | None = None, expected_version: int | None = None,
              resume: bool | None = None, motion: bool = False) -> dict:
        """Start tracking; resume the last job instead when it was cut off and the same
        request would redo it (`resume` None: when possible, False: never). `motion`:
        motion-aware tracking (SAMURAI)."""
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
            prompts = self._prompts_now(video_id)
            last = None if resume is False else self._resumable(
                video_id, direction, start, max_frames, prompts, motion)
            job = self._create(row, direction, passes, total, max_frames, start, prompts, last,
                               motion)
            if last is not None:
                self._resume_from(job, last, rt)
            job.review = svc.review.recorder(video_id, job.prompted, rt.frame_signals)
            svc.register_job(job)
            job.thread = threading.Thread(target=self._run, args=(job, rt),
                                          name=f"masklet-track-{video_id}", daemon=True)
            job.thread.start()
        svc.hub.publish(video_id, "progress", {"job": job.as_json()})
        return job.as_json()

    def _prompts_now(self, video_id: int) -> dict[int, tuple[int, list[int]]]:
        """object -> (its prompt_version, its effective prompt ids), every object."""
        prompts = {o["id"]: (o["prompt_version"], []) for o in self.svc.db.query(
            "SELECT id, prompt_version FROM objects WHERE video_id = ?", (video_id,))}
        for obj, ids in store.prompt_ids(self.svc.db, video_id).items():
            prompts[obj] = (prompts[obj][0], ids)
        return prompts

    def _create(self, row, direction: str, passes: list[Pass], total: int,
                max_frames: int | None, start: int, prompts: dict,
                last: sqlite3.Row | None, motion: bool = False) -> TrackJob:
        """The job's rows (job, plan, event) in one transaction, and the job; a job that
        resumes `last` starts with its frames counted as done."""
        svc, video_id, now = self.svc, row["id"], time.time()
        done, frame = (0, None) if last is None else (last["done"], last["frame"])
        with svc.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (video_id, state, direction, done, total, frame, "
                "started_at) VALUES (?, 'running', ?, ?, ?, ?, ?)",
                (video_id, direction, done, total, frame, now))
            store.insert_job_plan(conn, int(cur.lastrowid), start, max_frames, prompts, done,
                                  motion)
            store.record_event(conn, video_id, "track")
        return TrackJob(int(cur.lastrowid), video_id, direction, passes, total,
                        row["version"], max_frames, now,
                        set(store.prompts_by_key(svc.db, video_id)), motion)

    def _resumable(self, video_id: int, direction: str, start: int, max_frames: int | None,
                   prompts: dict, motion: bool) -> sqlite3.Row | None:
        """The video's last job when this request would redo it and it stopped part way
        (cancelled, or interrupted by a stop or a crash) with the same prompts. A job of
        the other motion option is never resumed: its frames were chosen another way."""
        last = store.latest_job_plan(self.svc.db, video_id)
        if last is None or last["prompts"] is None:
            return None
        if last["state"] not in ("cancelled", "interrupted") or not last["done"]:
            return None
        if (last["direction"], last["start"], last["max_frames"], bool(last["motion"])) != (
                direction, start, max_frames, motion):
            return None
        tracked = {o: ids for o, (_, ids) in store.tracked_prompts(self.svc.db,
                                                                   video_id).items() if ids}
        return last if tracked == {o: ids for o, (_, ids) in prompts.items() if ids} else None

    def _resume_from(self, job: TrackJob, last: sqlite3.Row, rt: VideoRuntime) -> None:
        """Make `job` go on where `last` stopped, its frames kept."""
        job.passes = remaining(job.passes, last["done"])
        job.done = job.resumed = last["done"]
        job.frame = last["frame"]
        if rt.last_job != last["id"] and job.passes:
            # The model state that held the tracking memory is gone: rebuild the memory
            # of the frames just before the resume point from the stored masks.
            start, reverse, _ = job.passes[0]
            job.seed = self._stored_masks(job.video_id, rt.memory_frames(start, reverse))

    def _stored_masks(self, video_id: int, frames: list[int]) -> dict[int, dict]:
        """frame -> {object: [H, W] bool} of the masks shown on `frames`."""
        media = self.svc.media(video_id)
        h, w = media.height, media.width
        out: dict[int, dict] = {}
        for frame in frames:
            for r in store.shown_masks(self.svc.db, video_id, frame):
                out.setdefault(frame, {})[r["obj"]] = decode_rle(r["rle"], h, w)
        return out

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
        rt.last_job = job.id
        try:
            if job.seed and not job.cancelled.is_set():
                rt.seed_memory(job.seed, job.passes[0][1])
            for i, (start, reverse, count) in enumerate(job.passes):
                if job.review is not None:
                    job.review.begin_pass(start, reverse, resumed=i == 0 and job.resumed > 0)
                for frame, masks in rt.track(start, count - 1, reverse, job.motion):
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
        """The frame's tracked masks, its review rows and the job's progress, together."""
        review = job.review.rows(frame, masks) if job.review is not None else []
        encoded = {obj: encode_rle(mask) for obj, mask in masks.items()
                   if (frame, obj) not in job.prompted}
        with self.svc.db.transaction() as conn:
            for obj, (rle, area) in encoded.items():
                store.put_mask(conn, job.video_id, frame, obj, "track", rle, area, job.version)
            store_rows(conn, job.video_id, review, job.version)
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
