"""The app's API operations: videos, objects, frames and masks over the shared state.

The state they share and its locking (one lock per video, no edits while tracking, one
model call at a time) live in `masklet.app.core`; `AppConfig` is defined there too and
imported from here as before.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from masklet.app import store
from masklet.app.browse import browse
from masklet.app.brush import BrushEditor
from masklet.app.core import AppConfig, ServiceCore
from masklet.app.editing import PromptEditor
from masklet.app.errors import AppError, conflict, not_found
from masklet.app.exports import Exporter
from masklet.app.labels import LabelBook, check_label
from masklet.app.maskcodec import (
    check_color,
    data_url,
    decode_rle,
    default_color,
    label_map,
    palette_png,
    rle_bbox,
)
from masklet.app.media import Media, probe_path, probe_upload
from masklet.app.metrics import video_metrics
from masklet.app.review import ReviewDesk
from masklet.app.tracking import Tracker
from masklet.modeling.sam2 import SAM2Model

__all__ = ["AnnotationService", "AppConfig"]


class AnnotationService(ServiceCore):
    """Everything the HTTP routes call; each public method is one API operation.

    Prompt edits live in `prompts` (`PromptEditor`), tracking in `tracker` (`Tracker`)
    and exports in `exporter` (`Exporter`); locking and model state come from `ServiceCore`.
    """

    def __init__(self, config: AppConfig, model: SAM2Model) -> None:
        super().__init__(config, model)
        self.prompts = PromptEditor(self)
        self.tracker = Tracker(self)
        self.exporter = Exporter(self)
        # The project's label set (app/labels.py); pages on every video hear of its changes.
        self.labels = LabelBook(self.db, lambda: self.hub.publish_to_all("labels", {}))
        self.brush = BrushEditor(self)
        self.review = ReviewDesk(self)  # review hints (app/review.py)

    # ------------------------------------------------------------------- videos
    def summary(self, row) -> dict:
        return store.video_summary(row, row["id"] in self.jobs)

    def list_videos(self) -> list[dict]:
        rows = self.db.query("SELECT * FROM videos ORDER BY id DESC")
        return [self.summary(r) for r in rows]

    def detail(self, video_id: int) -> dict:
        row = self.video_row(video_id)
        can_undo, can_redo = store.undo_redo_flags(self.db, video_id)
        media = store.media_of(row)
        return {**self.summary(row), "objects": store.objects(self.db, video_id),
                "frame_names": media.frame_names, "frame_sizes": media.frame_sizes,
                "can_undo": can_undo, "can_redo": can_redo,
                "track": self.tracker.current(video_id)}

    def open_path(self, raw: str, kind: str | None, name: str | None) -> dict:
        if kind not in (None, "video", "images"):
            raise AppError(400, f"kind must be 'video' or 'images', got {kind!r}")
        path = self.policy.resolve(raw)
        media = probe_path(path, kind, self.policy)
        with self.db.transaction() as conn:
            video_id = store.insert_video(conn, name or path.stem or path.name, "path", media)
        return self.summary(self.video_row(video_id))

    def add_upload(self, tmp: Path, filename: str, name: str | None) -> dict:
        """Store a decoded upload under uploads/<id>/; `tmp` is consumed either way."""
        folder = None
        try:
            # Errors name the file as the user chose it, never by the server's tmp path.
            label = Path(filename.replace("\\", "/")).name[:120] or "the upload"
            media, suffix = probe_upload(tmp, label)
            stem = Path(filename or "upload").stem or "upload"
            with self.db.transaction() as conn:
                video_id = store.insert_video(conn, name or stem, "upload", media)
                folder = self.data_dir / "uploads" / str(video_id)
                folder.mkdir()
                final = folder / f"{'image' if media.kind == 'images' else 'video'}{suffix}"
                conn.execute("UPDATE videos SET location = ?, frame_names = ? WHERE id = ?",
                             (str(final), json.dumps([final.name]), video_id))
                tmp.rename(final)
        except BaseException:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return self.summary(self.video_row(video_id))

    def rename_video(self, video_id: int, name: str, expected_version: int | None) -> dict:
        name = _clean_name(name)
        with self.locked(video_id, expected_version), self.db.transaction() as conn:
            conn.execute("UPDATE videos SET name = ? WHERE id = ?", (name, video_id))
            version = store.bump_version(conn, video_id)
        self.changed(video_id, version, "video")
        return self.summary(self.video_row(video_id))

    def delete_video(self, video_id: int, expected_version: int | None) -> None:
        with self.locked(video_id, expected_version) as row:
            with self.db.transaction() as conn:
                conn.execute("DELETE FROM videos WHERE id = ?", (video_id,))
            self.drop_runtime(video_id)
            self.drop_reader(video_id)
            for sub in ("cache", "exports") + (("uploads",) if row["source"] == "upload" else ()):
                shutil.rmtree(self.data_dir / sub / str(video_id), ignore_errors=True)
        self.hub.forget(video_id)

    # ------------------------------------------------------------------ objects
    def object_row(self, video_id: int, obj: int):
        row = self.db.query_one("SELECT * FROM objects WHERE video_id = ? AND id = ?",
                                (video_id, obj))
        if row is None:
            raise not_found(f"video {video_id} has no object {obj}")
        return row

    def create_object(self, video_id: int, *, name: str | None, color: str | None,
                      obj: int | None, expected_version: int | None) -> dict:
        with self.locked(video_id, expected_version):
            taken = {r[0] for r in self.db.query("SELECT id FROM objects WHERE video_id = ?",
                                                 (video_id,))}
            if obj is None:
                obj = next((i for i in range(1, 256) if i not in taken), None)
                if obj is None:
                    raise conflict("a video holds at most 255 objects")
            elif not 1 <= obj <= 255:
                raise AppError(400, f"object ids are 1..255, got {obj}")
            elif obj in taken:
                raise conflict(f"object {obj} already exists")
            with self.db.transaction() as conn:
                self.insert_object(conn, video_id, obj, name, color)
                version = store.bump_version(conn, video_id)
        self.changed(video_id, version, "object")
        return {"object": store.object_json(self.object_row(video_id, obj)), "version": version}

    def insert_object(self, conn, video_id: int, obj: int, name: str | None = None,
                      color: str | None = None) -> None:
        """Add an object inside the caller's transaction (default name and DAVIS colour)."""
        color = _color(color) if color is not None else default_color(obj)
        name = _clean_name(name) if name is not None else f"object {obj}"
        conn.execute("INSERT INTO objects (video_id, id, name, color, created_at) "
                     "VALUES (?, ?, ?, ?, ?)", (video_id, obj, name, color, time.time()))
        store.record_event(conn, video_id, "object", obj=obj)

    def update_object(self, video_id: int, obj: int, *, name: str | None, color: str | None,
                      expected_version: int | None, set_label: bool = False,
                      label: int | None = None) -> dict:
        """Rename / recolour an object; with `set_label`, give it `label` (None: none)."""
        with self.locked(video_id, expected_version):
            self.object_row(video_id, obj)
            with self.db.transaction() as conn:
                if name is not None:
                    conn.execute("UPDATE objects SET name = ? WHERE video_id = ? AND id = ?",
                                 (_clean_name(name), video_id, obj))
                if color is not None:
                    conn.execute("UPDATE objects SET color = ? WHERE video_id = ? AND id = ?",
                                 (_color(color), video_id, obj))
                if set_label:
                    if label is not None:
                        check_label(conn, label)  # 422, the transaction rolled back
                    conn.execute("UPDATE objects SET label_id = ? WHERE video_id = ? AND id = ?",
                                 (label, video_id, obj))
                store.record_event(conn, video_id, "object", obj=obj)
                version = store.bump_version(conn, video_id)
        self.changed(video_id, version, "object")
        return {"object": store.object_json(self.object_row(video_id, obj)), "version": version}

    def delete_object(self, video_id: int, obj: int, expected_version: int | None) -> dict:
        with self.locked(video_id, expected_version):
            self.object_row(video_id, obj)
            try:
                with self.db.transaction() as conn:
                    conn.execute("DELETE FROM objects WHERE video_id = ? AND id = ?",
                                 (video_id, obj))
                    store.record_event(conn, video_id, "object", obj=obj)
                    version = store.bump_version(conn, video_id)
            finally:
                # Rebuilt without the object on next use; cheaper than keeping two truths.
                self.drop_runtime(video_id)
        self.changed(video_id, version, "object")
        return {"version": version}

    # ------------------------------------------------------------ frames, masks
    def check_frame(self, video_id: int, frame: int) -> Media:
        media = self.media(video_id)
        if not 0 <= frame < media.num_frames:
            raise not_found(f"frame {frame} is out of range: the video has {media.num_frames} "
                            f"frames (0..{media.num_frames - 1})")
        return media

    def frame_jpeg(self, video_id: int, frame: int) -> bytes:
        self.check_frame(video_id, frame)
        return self.reader(video_id).jpeg(frame)

    def frame_masks(self, video_id: int, frame: int) -> tuple[Media, list]:
        media = self.check_frame(video_id, frame)
        return media, store.shown_masks(self.db, video_id, frame)

    def mask_png(self, video_id: int, frame: int) -> tuple[bytes, int, list[int]]:
        """(palette PNG of the frame's shown masks, the video version, objects drawn)."""
        media, rows = self.frame_masks(video_id, frame)
        w, h = media.frame_size(frame)
        masks = {r["obj"]: decode_rle(r["rle"], h, w) for r in rows if r["area"] > 0}
        colors = {o["id"]: o["color"] for o in store.objects(self.db, video_id)}
        version = self.video_row(video_id)["version"]
        return palette_png(label_map(masks, h, w), colors), version, sorted(masks)

    def mask_json(self, video_id: int, frame: int) -> dict:
        media, rows = self.frame_masks(video_id, frame)
        w, h = media.frame_size(frame)
        objs = [{"id": r["obj"], "source": r["source"], "stale": bool(r["stale"]),
                 "area": r["area"], "bbox": rle_bbox(r["rle"], h, w),
                 "rle": {"size": [h, w], "counts": r["rle"]}} for r in rows]
        return {"frame": frame, "version": self.video_row(video_id)["version"], "width": w,
                "height": h, "objects": objs}

    def frame_result(self, video_id: int, frame: int, version: int, action_id: int | None,
                     score: float | None = None, obj: int | None = None) -> dict:
        """What a prompt-like mutation answers: the frame's new masks, ready to draw."""
        png, _, drawn = self.mask_png(video_id, frame)
        return {"version": version, "frame": frame, "object": obj, "action_id": action_id,
                "mask_png": data_url(png), "objects": drawn, "score": score}

    def timeline(self, video_id: int) -> dict:
        row = self.video_row(video_id)
        prompted: dict[str, list[int]] = {}
        for frame, obj in store.prompts_by_key(self.db, video_id):
            prompted.setdefault(str(frame), []).append(obj)
        masked: dict[str, list[int]] = {}
        stale: set[int] = set()
        for r in store.shown_masks(self.db, video_id, with_rle=False):
            if r["area"] > 0:
                masked.setdefault(str(r["frame"]), []).append(r["obj"])
            if r["stale"]:
                stale.add(r["frame"])
        return {"num_frames": row["num_frames"], "version": row["version"],
                "prompted": prompted, "masked": masked, "stale": sorted(stale)}

    def prepare(self, video_id: int, frame: int) -> dict:
        self.check_frame(video_id, frame)
        with self.locked(video_id, during_tracking=True):
            self.runtime(video_id).prepare(frame)
        return {"frame": frame, "cached": True}

    # ---------------------------------------------------------- info, measures
    def info(self) -> dict:
        from masklet import __version__

        model = self.host.model
        return {"model": self.config.model_name or model.config.name,
                "preset": model.config.name, "image_size": model.image_size,
                "device": str(model.device), "demo_model": self.config.demo_model,
                "version": __version__, "roots": [str(r) for r in self.policy.roots],
                "max_upload_mb": self.config.max_upload_mb}

    def browse(self, path: str | None) -> dict:
        return browse(self.policy, path)

    def metrics(self, video_id: int) -> dict:
        row = self.video_row(video_id)
        return video_metrics(self.db, video_id, row["num_frames"], self.config.idle_cap_s)

    def prompt_list(self, video_id: int, frame: int | None, obj: int | None) -> dict:
        """The prompts that shape the masks now, per (frame, object), in order."""
        if frame is not None:
            self.check_frame(video_id, frame)
        if obj is not None:
            self.object_row(video_id, obj)
        by_key = store.prompts_by_key(self.db, video_id, obj=obj, frame=frame)
        return {"prompts": [a.as_json() for actions in by_key.values() for a in actions]}


def _clean_name(name: str) -> str:
    name = " ".join(str(name).split())
    if not name or len(name) > 200:
        raise AppError(400, "a name must have 1 to 200 characters")
    return name


def _color(color: str) -> str:
    try:
        return check_color(color)
    except ValueError as err:
        raise AppError(400, str(err)) from None
