"""Review hints in the app: each tracked frame's signals and "needs review" score.

A tracking job scores every frame it writes with `masklet.tracking.review` (one
`ReviewScorer` per object and pass, in tracking order) and stores the signals and the
score in ``frame_signals`` in the same transaction as the frame's masks, so a crash
keeps exactly the scored frames it keeps. Rows of frames where an object has prompts are
stored too (``prompted = 1``: the anchor a resumed job's scorer restarts from) but never
shown. Which rows are flagged is read with the server's threshold (``--review-threshold``),
so a restart with another threshold applies to frames tracked before.

A frame counts as reviewed once the annotator looked at it (``POST .../review/seen``) or
edited it (any stored action on that frame and object: `store.insert_action` marks it).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI

from masklet.app.bodies import PathInt, QueryInt, ReviewSeenBody
from masklet.app.errors import AppError
from masklet.export import atomic_write
from masklet.tracking.review import FrameReviewInput, PassScorers, ReviewConfig
from masklet.tracking.signals import FrameSignals

if TYPE_CHECKING:
    from pathlib import Path

    from masklet.app.service import AnnotationService

CSV_COLUMNS = ("frame", "object", "object_score", "iou", "area", "motion", "score", "flagged",
               "reviewed")
# (frame, obj, object_score, iou, area, x0, y0, x1, y1, motion, score, flagged, prompted)
Row = tuple


class ReviewRecorder:
    """Scores one tracking job's frames as they come, one scorer per object and pass."""

    def __init__(self, config: ReviewConfig, db, video_id: int, prompted: set[tuple[int, int]],
                 signals: Callable[[int], dict[int, FrameSignals]]) -> None:
        self.db, self.video_id, self.prompted = db, video_id, prompted
        self.signals = signals  # frame -> each object's signals there (the runtime's)
        self.scorers = PassScorers(config)

    def begin_pass(self, start: int, reverse: bool, resumed: bool = False) -> None:
        """A new pass starts at `start`; a resumed one first replays the stored rows of
        the frames just before it (back to each object's prompted frame), so its scores
        go on as if the job had never stopped."""
        self.scorers.reset()
        if not resumed:
            return
        rows = self.db.query(
            "SELECT * FROM frame_signals WHERE video_id = ? AND frame " + (">" if reverse else "<")
            + " ? ORDER BY obj, frame " + ("ASC" if reverse else "DESC"), (self.video_id, start))
        by_obj: dict[int, list] = {}
        for r in rows:
            chain = by_obj.setdefault(r["obj"], [])
            expected = start + (1 if reverse else -1) * (len(chain) + 1)
            if r["frame"] != expected or (chain and chain[-1]["prompted"]):
                continue  # a gap, or the anchor was already reached
            chain.append(r)
        for obj, chain in by_obj.items():
            scorer = self.scorers.scorer(obj)
            for r in reversed(chain):
                scorer.step(_stored_input(r))

    def rows(self, frame: int, masks: dict[int, np.ndarray]) -> list[Row]:
        """One row per object with a mask and signals on `frame` (the model just tracked
        it); scores advance each object's scorer."""
        signals = self.signals(frame)
        out = []
        for obj, mask in sorted(masks.items()):
            s = signals.get(obj)
            if s is None:
                continue
            prompted = (frame, obj) in self.prompted
            given, review = self.scorers.step(obj, mask, s.object_score, s.iou, s.motion,
                                              prompted)
            box = given.box or (None,) * 4
            out.append((frame, obj, given.object_score, given.iou, given.area, *box,
                        given.motion, review.score, int(review.flagged), int(prompted)))
        return out


def _stored_input(r) -> FrameReviewInput:
    box = None if r["x0"] is None else (r["x0"], r["y0"], r["x1"], r["y1"])
    return FrameReviewInput(r["object_score"], r["iou"], r["area"], box, r["motion"],
                            bool(r["prompted"]))


def store_rows(conn, video_id: int, rows: list[Row], version: int) -> None:
    """Write a frame's review rows inside the caller's transaction (the frame's masks')."""
    conn.executemany(
        "INSERT OR REPLACE INTO frame_signals (video_id, frame, obj, object_score, iou, area, "
        "x0, y0, x1, y1, motion, score, flagged, prompted, version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(video_id, *r, version) for r in rows])


def mark_reviewed(conn, video_id: int, frame: int, obj: int) -> None:
    """(frame, object) was looked at or edited (inside the caller's transaction)."""
    conn.execute("INSERT OR REPLACE INTO reviewed (video_id, frame, obj, at) VALUES (?, ?, ?, ?)",
                 (video_id, frame, obj, time.time()))


class ReviewDesk:
    """The review operations of an `AnnotationService` (routes: `review_routes`)."""

    def __init__(self, svc: AnnotationService) -> None:
        self.svc = svc
        self.config: ReviewConfig = svc.config.review

    def recorder(self, video_id: int, prompted: set[tuple[int, int]],
                 signals: Callable[[int], dict[int, FrameSignals]]) -> ReviewRecorder:
        return ReviewRecorder(self.config, self.svc.db, video_id, prompted, signals)

    def _rows(self, video_id: int, obj: int | None = None) -> list[dict]:
        """The shown rows (tracked frames, not prompted ones), in frame and object order."""
        sql = ("SELECT s.*, r.at IS NOT NULL AS seen FROM frame_signals s LEFT JOIN reviewed r "
               "ON r.video_id = s.video_id AND r.frame = s.frame AND r.obj = s.obj "
               "WHERE s.video_id = ? AND s.prompted = 0")
        params: tuple = (video_id,)
        if obj is not None:
            sql, params = sql + " AND s.obj = ?", (video_id, obj)
        threshold = self.config.threshold
        return [{"frame": r["frame"], "object": r["obj"], "object_score": r["object_score"],
                 "iou": r["iou"], "area": r["area"], "motion": r["motion"],
                 "score": r["score"], "flagged": r["score"] >= threshold,
                 "reviewed": bool(r["seen"])}
                for r in self.svc.db.query(sql + " ORDER BY s.frame, s.obj", params)]

    def get(self, video_id: int, obj: int | None = None) -> dict:
        """GET .../review: rows, flagged frames per object, and the review walk."""
        self.svc.video_row(video_id)
        if obj is not None:
            self.svc.object_row(video_id, obj)
        rows = self._rows(video_id, obj)
        flagged: dict[str, list[int]] = {}
        for r in rows:
            if r["flagged"]:
                flagged.setdefault(str(r["object"]), []).append(r["frame"])
        walk = sorted((r for r in rows if r["flagged"]),
                      key=lambda r: (-r["score"], r["frame"], r["object"]))
        return {"config": self.config.as_json(), "rows": rows, "flagged": flagged,
                "order": [{"frame": r["frame"], "object": r["object"]} for r in walk]}

    def seen(self, video_id: int, frame: int, obj: int | None) -> dict:
        """POST .../review/seen: mark (frame, object) reviewed; object None: every object."""
        row = self.svc.video_row(video_id)
        if obj is not None:
            self.svc.object_row(video_id, obj)
        if not 0 <= frame < row["num_frames"]:
            raise AppError(422, f"frame {frame} is out of range: the video has "
                                f"{row['num_frames']} frames (0..{row['num_frames'] - 1})")
        with self.svc.db.transaction() as conn:
            objs = [obj] if obj is not None else [r[0] for r in conn.execute(
                "SELECT id FROM objects WHERE video_id = ? ORDER BY id", (video_id,))]
            for o in objs:
                mark_reviewed(conn, video_id, frame, o)
        # Other pages open on the video show the marks at once (no version change: the
        # masks are as they were).
        self.svc.hub.publish(video_id, "reviewed", {"frame": frame, "objects": objs})
        return {"reviewed": len(objs)}

    def write_csv(self, target: Path, video_id: int) -> Path:
        """The review-csv export: one row per tracked frame and object."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for r in self._rows(video_id):
            writer.writerow([_cell(r[c]) for c in CSV_COLUMNS])
        with atomic_write(target, "w") as f:
            f.write(text.getvalue())
        return target

    def sav_flags(self, video_id: int, num_frames: int, ids: list[int]) -> dict:
        """The SA-V export's added key: per frame, per masklet id (the file's order), the
        score (null where not tracked) and whether it is flagged."""
        at = {(r["frame"], r["object"]): r for r in self._rows(video_id)}
        score = [[at[(f, o)]["score"] if (f, o) in at else None for o in ids]
                 for f in range(num_frames)]
        flagged = [[bool((f, o) in at and at[(f, o)]["flagged"]) for o in ids]
                   for f in range(num_frames)]
        return {"threshold": self.config.threshold, "score": score, "flagged": flagged}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def review_routes(app: FastAPI, svc: AnnotationService) -> None:
    @app.get("/api/videos/{video_id}/review")
    def review(video_id: PathInt, object: QueryInt = None) -> dict:
        return svc.review.get(video_id, object)

    @app.post("/api/videos/{video_id}/review/seen")
    def seen(video_id: PathInt, body: ReviewSeenBody) -> dict:
        return svc.review.seen(video_id, body.frame, body.obj)
