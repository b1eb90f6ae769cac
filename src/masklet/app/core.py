"""The app's shared state: data folder, database, per-video locks, jobs, runtimes, readers.

`ServiceCore` is the base of `AnnotationService` (service.py), which adds the API
operations; this module holds what those operations share and how they take turns.

Concurrency rules:
    - one `threading.Lock` per video serialises every mutation of that video (two tabs
      clicking at once take turns); a mutation may carry ``expected_version`` and is
      refused with 409 when the video moved on;
    - while a tracking job runs on a video its mutations are refused (409), reads go on;
    - model calls take `ModelHost.lock` (one at a time per process).
"""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from masklet.app import store
from masklet.app.db import Database, DataDirLock
from masklet.app.errors import AppError, conflict, not_found
from masklet.app.events import EventHub
from masklet.app.media import FrameReader, Media, PathPolicy
from masklet.app.runtime import ImageRuntime, ModelHost, VideoRuntime
from masklet.app.tracking import TrackJob
from masklet.io import VideoReadError
from masklet.modeling.sam2 import SAM2Model
from masklet.tracking.review import ReviewConfig

LOCK_TIMEOUT_S = 120.0


@dataclass
class AppConfig:
    """Settings of one app instance (what `masklet serve` takes).

    The limits that keep one request from holding the app (README, "Annotation app"):
    allowed_hosts: Host names served besides the loopback ones (`--host`, `--allow-host`).
    max_json_mb: largest body of a JSON request (uploads have `max_upload_mb`).
    max_points_per_prompt: clicks in one prompt request.
    max_points_per_frame: clicks kept for one object on one frame (all its prompts there);
        they are all fed to each model call on that frame, and replayed on every rebuild.
    model_wait_s: how long a request waits for the model (one call at a time) before a
        503 "the model is busy".
    max_brush_points: points in one brush stroke (each adds a segment to rasterise).
    """

    data_dir: Path
    roots: list[Path] = field(default_factory=list)
    max_upload_mb: float = 500.0
    idle_cap_s: float = 30.0
    feature_cache_size: int = 4
    max_open_videos: int = 4
    bfloat16: bool = False  # model calls under bf16 autocast
    model_name: str = ""  # shown by the page (the preset name)
    demo_model: bool = False  # the bundled nano demo model is in use
    allowed_hosts: tuple[str, ...] = ()
    max_json_mb: float = 1.0
    max_points_per_prompt: int = 100
    max_points_per_frame: int = 300
    model_wait_s: float = 30.0
    max_brush_points: int = 2000
    review: ReviewConfig = field(default_factory=ReviewConfig)  # review hints' score

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class ServiceCore:
    """Opens the data folder and keeps what every operation shares, with its locking."""

    def __init__(self, config: AppConfig, model: SAM2Model) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir).resolve()
        for sub in ("uploads", "cache", "exports", "tmp"):
            (self.data_dir / sub).mkdir(parents=True, exist_ok=True)
        self._owner = DataDirLock(self.data_dir)
        self.db = Database(self.data_dir / "masklet.db")
        store.mark_interrupted_jobs(self.db)
        self._clean_leftovers()
        self.policy = PathPolicy(config.roots)
        self.host = ModelHost(model, feature_cache_size=config.feature_cache_size,
                              bfloat16=config.bfloat16, wait_s=config.model_wait_s)
        self.hub = EventHub()
        self.jobs: dict[int, TrackJob] = {}  # video id -> its running job
        self._guard = threading.Lock()
        self._video_locks: dict[int, threading.Lock] = {}
        self._runtimes: OrderedDict[int, VideoRuntime | ImageRuntime] = OrderedDict()
        self._readers: dict[int, FrameReader] = {}

    def _clean_leftovers(self) -> None:
        """Drop temporary uploads and upload folders whose insert never committed."""
        shutil.rmtree(self.data_dir / "tmp", ignore_errors=True)
        (self.data_dir / "tmp").mkdir()
        known = {str(r[0]) for r in self.db.query("SELECT id FROM videos")}
        for folder in (self.data_dir / "uploads").iterdir():
            if folder.name not in known:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Stop tracking (finished frames are kept) and close files and the database."""
        for job in list(self.jobs.values()):
            job.cancel_and_wait(timeout=60.0)
        with self._guard:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()
            self._runtimes.clear()
        self.db.close()
        self._owner.release()

    # ------------------------------------------------------------------ locking
    def video_row(self, video_id: int):
        row = self.db.query_one("SELECT * FROM videos WHERE id = ?", (video_id,))
        if row is None:
            raise not_found(f"no video with id {video_id}")
        return row

    @contextmanager
    def locked(self, video_id: int, expected_version: int | None = None, *,
               during_tracking: bool = False) -> Iterator:
        """Hold the video's lock; yields its row after the version and tracking checks."""
        self.video_row(video_id)
        with self._guard:
            lock = self._video_locks.setdefault(video_id, threading.Lock())
        if not lock.acquire(timeout=LOCK_TIMEOUT_S):
            raise conflict("the video is busy; try again")
        try:
            row = self.video_row(video_id)
            if video_id in self.jobs and not during_tracking:
                raise conflict("tracking in progress; cancel it first", version=row["version"])
            if expected_version is not None and expected_version != row["version"]:
                raise conflict(f"stale version: expected {expected_version}, the video is at "
                               f"{row['version']}; reload", version=row["version"])
            yield row
        finally:
            lock.release()

    def changed(self, video_id: int, version: int, what: str) -> None:
        self.hub.publish(video_id, "changed", {"version": version, "what": what})

    def register_job(self, job: TrackJob) -> None:
        with self._guard:
            self.jobs[job.video_id] = job

    def unregister_job(self, job: TrackJob) -> None:
        with self._guard:
            if self.jobs.get(job.video_id) is job:
                del self.jobs[job.video_id]

    # ----------------------------------------------------------------- runtimes
    def media(self, video_id: int) -> Media:
        return store.media_of(self.video_row(video_id))

    def reader(self, video_id: int) -> FrameReader:
        with self._guard:
            reader = self._readers.get(video_id)
        if reader is None:
            row = self.video_row(video_id)
            media = store.media_of(row)
            reader = FrameReader(media, self.data_dir / "cache" / str(video_id),
                                 self._allowed_files(row))
            with self._guard:
                reader = self._readers.setdefault(video_id, reader)
        return reader

    def _allowed_files(self, row) -> Callable[[Path], bool]:
        """Where a video's files may really be (checked at every read): its upload folder,
        or the roots for a video opened by path."""
        if row["source"] == "upload":
            folder = self.data_dir / "uploads" / str(row["id"])
            return lambda real: folder in real.parents
        return self.policy.inside

    def drop_reader(self, video_id: int) -> None:
        """Close the video's frame reader, if one is open (a deleted video's files go)."""
        with self._guard:
            reader = self._readers.pop(video_id, None)
        if reader is not None:
            reader.close()

    def runtime(self, video_id: int) -> VideoRuntime | ImageRuntime:
        """The video's model state, rebuilt from its stored prompts when not in memory.

        Call with the video's lock held. The least recently used runtimes beyond
        `max_open_videos` are forgotten (never one that is tracking).
        """
        with self._guard:
            rt = self._runtimes.get(video_id)
            if rt is not None:
                self._runtimes.move_to_end(video_id)
                return rt
        media = self.media(video_id)
        if media.kind == "video":
            rt = VideoRuntime(self.host, media, self.reader(video_id))
        else:
            rt = ImageRuntime(self.host, media, self.reader(video_id),
                              cache_size=self.config.feature_cache_size)
        try:
            rt.build(store.active_actions(self.db, video_id))
        except (VideoReadError, OSError) as err:
            raise AppError(410, f"the video's frames cannot be read any more: {err}") from err
        with self._guard:
            self._runtimes[video_id] = rt
            idle = [v for v in self._runtimes if v != video_id and v not in self.jobs]
            for old in idle[: max(0, len(self._runtimes) - self.config.max_open_videos)]:
                del self._runtimes[old]
        return rt

    def drop_runtime(self, video_id: int) -> None:
        """Forget the model state (it is rebuilt from the database on next use)."""
        with self._guard:
            self._runtimes.pop(video_id, None)
