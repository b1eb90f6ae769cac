"""Reads and writes of the app's tables, as plain dicts (what the API returns).

Functions taking `conn` run inside the caller's write transaction; the others read.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from masklet.app.db import Database
from masklet.app.media import Media


@dataclass
class Action:
    """One stored prompt action (a click, a box, an imported mask or a clear)."""

    id: int
    group_id: int
    frame: int
    obj: int
    kind: str
    points: list[list[float]] | None
    labels: list[int] | None
    box: list[float] | None
    mask_rle: str | None
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Action:
        def load(v):
            return None if v is None else json.loads(v)

        return cls(row["id"], row["group_id"], row["frame"], row["obj"], row["kind"],
                   load(row["points"]), load(row["labels"]), load(row["box"]),
                   row["mask_rle"], row["created_at"])

    def as_json(self) -> dict:
        return {"id": self.id, "frame": self.frame, "object": self.obj, "kind": self.kind,
                "points": self.points or [], "labels": self.labels or [], "box": self.box,
                "created_at": self.created_at}


def effective_prompts(actions: list[Action]) -> list[Action]:
    """The actions that still shape one object's mask on one frame, in order.

    A clear empties the list; a box or an imported mask starts it afresh; clicks add to it.
    """
    out: list[Action] = []
    for action in actions:
        if action.kind == "clear":
            out = []
        elif action.kind in ("box", "mask"):
            out = [action]
        else:
            out.append(action)
    return out


# ------------------------------------------------------------------------- videos
def media_of(row: sqlite3.Row) -> Media:
    sizes = row["frame_sizes"]
    return Media(row["kind"], Path(row["location"]), row["num_frames"], row["width"],
                 row["height"], row["fps"], json.loads(row["frame_names"]),
                 None if sizes is None else json.loads(sizes), bool(row["upright"]))


def video_summary(row: sqlite3.Row, tracking: bool) -> dict:
    return {"id": row["id"], "name": row["name"], "kind": row["kind"], "source": row["source"],
            "num_frames": row["num_frames"], "width": row["width"], "height": row["height"],
            "fps": row["fps"], "version": row["version"], "created_at": row["created_at"],
            # Tells apart sessions of the same name: where it was opened from.
            "location": row["location"] if row["source"] == "path" else "upload",
            "tracking": tracking}


def insert_video(conn: sqlite3.Connection, name: str, source: str, media: Media) -> int:
    cur = conn.execute(
        "INSERT INTO videos (name, kind, source, location, num_frames, width, height, fps, "
        "frame_names, frame_sizes, created_at, upright) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, ?)",
        (name, media.kind, source, str(media.location), media.num_frames, media.width,
         media.height, media.fps, json.dumps(media.frame_names),
         None if media.frame_sizes is None else json.dumps(media.frame_sizes), time.time(),
         int(media.upright)))
    return int(cur.lastrowid)


def bump_version(conn: sqlite3.Connection, video_id: int) -> int:
    conn.execute("UPDATE videos SET version = version + 1 WHERE id = ?", (video_id,))
    return conn.execute("SELECT version FROM videos WHERE id = ?", (video_id,)).fetchone()[0]


def record_event(conn: sqlite3.Connection, video_id: int, kind: str, *, obj: int | None = None,
                 frame: int | None = None, clicks: int = 0) -> None:
    conn.execute("INSERT INTO events (video_id, t, kind, obj, frame, clicks) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (video_id, time.time(), kind, obj, frame, clicks))


# ------------------------------------------------------------------------ objects
def object_json(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "name": row["name"], "color": row["color"],
            "created_at": row["created_at"], "label": row["label_id"]}


def objects(db: Database, video_id: int) -> list[dict]:
    rows = db.query("SELECT * FROM objects WHERE video_id = ? ORDER BY id", (video_id,))
    return [object_json(r) for r in rows]


def touch_object_prompts(conn: sqlite3.Connection, video_id: int, obj: int, version: int) -> None:
    """Record that `obj`'s prompts changed at `version` (its tracked masks turn stale),
    unless they are back to exactly those the latest tracking job used: then the
    prompt version of that time comes back and those masks are current again."""
    tracked = tracked_prompts(conn, video_id).get(obj)
    if tracked is not None and tracked[1] == prompt_ids(conn, video_id, obj).get(obj, []):
        version = tracked[0]
    conn.execute("UPDATE objects SET prompt_version = ? WHERE video_id = ? AND id = ?",
                 (version, video_id, obj))


# ------------------------------------------------------------------------ actions
def insert_action(conn: sqlite3.Connection, video_id: int, group_id: int, frame: int, obj: int,
                  kind: str, *, points=None, labels=None, box=None, mask_rle=None) -> int:
    def dump(v):
        return None if v is None else json.dumps(v)

    cur = conn.execute(
        "INSERT INTO actions (video_id, group_id, frame, obj, kind, points, labels, box, "
        "mask_rle, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (video_id, group_id, frame, obj, kind, dump(points), dump(labels), dump(box), mask_rle,
         time.time()))
    # Any edit of (frame, object) means the annotator has looked at it (review hints).
    conn.execute("INSERT OR REPLACE INTO reviewed (video_id, frame, obj, at) VALUES (?, ?, ?, ?)",
                 (video_id, frame, obj, time.time()))
    return int(cur.lastrowid)


def next_group(conn: sqlite3.Connection, video_id: int) -> int:
    """A fresh undo step; starting one discards the redo stack, as in any editor."""
    conn.execute("DELETE FROM actions WHERE video_id = ? AND undone = 1", (video_id,))
    row = conn.execute("SELECT MAX(group_id) FROM actions WHERE video_id = ?",
                       (video_id,)).fetchone()
    return (row[0] or 0) + 1


def active_actions(db_or_conn, video_id: int, *, obj: int | None = None,
                   frame: int | None = None) -> list[Action]:
    sql, params = "SELECT * FROM actions WHERE video_id = ? AND undone = 0", [video_id]
    if obj is not None:
        sql, params = sql + " AND obj = ?", params + [obj]
    if frame is not None:
        sql, params = sql + " AND frame = ?", params + [frame]
    conn = db_or_conn.conn if isinstance(db_or_conn, Database) else db_or_conn
    return [Action.from_row(r) for r in conn.execute(sql + " ORDER BY id", params)]


def prompts_by_key(db: Database, video_id: int, *, obj: int | None = None,
                   frame: int | None = None) -> dict[tuple[int, int], list[Action]]:
    """(frame, object) -> its effective prompts, for the pairs that have any, sorted."""
    by_key: dict[tuple[int, int], list[Action]] = {}
    for action in active_actions(db, video_id, obj=obj, frame=frame):
        by_key.setdefault((action.frame, action.obj), []).append(action)
    out = {key: effective_prompts(actions) for key, actions in sorted(by_key.items())}
    return {key: prompts for key, prompts in out.items() if prompts}


def prompt_ids(db_or_conn, video_id: int, obj: int | None = None) -> dict[int, list[int]]:
    """object -> ids of its effective prompts (all frames, sorted), for objects with any.

    Action ids are never reused and undo / redo keep them, so equal ids mean equal prompts.
    """
    by_key: dict[tuple[int, int], list[Action]] = {}
    for action in active_actions(db_or_conn, video_id, obj=obj):
        by_key.setdefault((action.frame, action.obj), []).append(action)
    out: dict[int, list[int]] = {}
    for (_, o), actions in by_key.items():
        out.setdefault(o, []).extend(a.id for a in effective_prompts(actions))
    return {o: sorted(ids) for o, ids in out.items() if ids}


def put_action_mask(conn: sqlite3.Connection, action_id: int, rle: str) -> None:
    conn.execute("INSERT OR REPLACE INTO action_masks VALUES (?, ?)", (action_id, rle))


def action_mask(db_or_conn, action_id: int) -> str | None:
    """The RLE counts of the prompt mask right after `action_id` (None if not recorded)."""
    conn = db_or_conn.conn if isinstance(db_or_conn, Database) else db_or_conn
    row = conn.execute("SELECT rle FROM action_masks WHERE action_id = ?",
                       (action_id,)).fetchone()
    return None if row is None else row[0]


def undo_redo_flags(db: Database, video_id: int) -> tuple[bool, bool]:
    row = db.query_one("SELECT SUM(undone = 0), SUM(undone = 1) FROM actions WHERE video_id = ?",
                       (video_id,))
    return bool(row[0]), bool(row[1])


# -------------------------------------------------------------------------- masks
def put_mask(conn: sqlite3.Connection, video_id: int, frame: int, obj: int, source: str,
             rle: str, area: int, version: int) -> None:
    conn.execute("INSERT OR REPLACE INTO masks VALUES (?, ?, ?, ?, ?, ?, ?)",
                 (video_id, frame, obj, source, rle, area, version))


def delete_prompt_mask(conn: sqlite3.Connection, video_id: int, frame: int, obj: int) -> None:
    conn.execute("DELETE FROM masks WHERE video_id = ? AND frame = ? AND obj = ? "
                 "AND source = 'prompt'", (video_id, frame, obj))


# The mask shown for (frame, object) is the newer of its prompt and tracked versions; a
# tracked one is stale when the object's prompts changed after it was made.
_SHOWN = """
SELECT m.frame, m.obj, m.source, {rle}, m.area, m.version,
       (m.source = 'track' AND m.version < o.prompt_version) AS stale
FROM masks m JOIN objects o ON o.video_id = m.video_id AND o.id = m.obj
WHERE m.video_id = ?{where} AND NOT EXISTS (
    SELECT 1 FROM masks n WHERE n.video_id = m.video_id AND n.frame = m.frame
    AND n.obj = m.obj AND n.source != m.source
    AND (n.version > m.version OR (n.version = m.version AND n.source = 'prompt')))
ORDER BY m.frame, m.obj
"""


def shown_masks(db: Database, video_id: int, frame: int | None = None, *,
                with_rle: bool = True) -> list[sqlite3.Row]:
    """The shown mask rows (frame, obj, source, rle, area, version, stale); without
    `with_rle` the rle column is NULL (a long video's overview need not read them)."""
    sql = _SHOWN.replace("{rle}", "m.rle" if with_rle else "NULL AS rle")
    if frame is None:
        return db.query(sql.format(where=""), (video_id,))
    return db.query(sql.format(where=" AND m.frame = ?"), (video_id, frame))


# --------------------------------------------------------------------------- jobs
def job_json(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    keys = ("id", "state", "direction", "done", "total", "frame", "error", "started_at",
            "finished_at")
    out = {k: row[k] for k in keys}
    out["resumed"] = (row["resumed"] if "resumed" in row.keys() else None) or 0
    out["motion"] = bool(row["motion"]) if "motion" in row.keys() else False
    return out


def latest_job(db: Database, video_id: int) -> dict | None:
    return job_json(latest_job_plan(db, video_id))


def insert_job_plan(conn: sqlite3.Connection, job_id: int, start: int, max_frames: int | None,
                    prompts: dict[int, tuple[int, list[int]]], resumed: int = 0,
                    motion: bool = False) -> None:
    conn.execute("INSERT INTO job_plans (job_id, start, max_frames, prompts, resumed, motion) "
                 "VALUES (?, ?, ?, ?, ?, ?)",
                 (job_id, start, max_frames, json.dumps({str(o): p for o, p in prompts.items()}),
                  resumed, int(motion)))


def latest_job_plan(db_or_conn, video_id: int) -> sqlite3.Row | None:
    """The newest job of a video with its plan (start, max_frames, prompts, motion), or
    None."""
    conn = db_or_conn.conn if isinstance(db_or_conn, Database) else db_or_conn
    return conn.execute(
        "SELECT j.*, p.start, p.max_frames, p.prompts, p.resumed, p.motion FROM jobs j "
        "LEFT JOIN job_plans p "
        "ON p.job_id = j.id WHERE j.video_id = ? ORDER BY j.id DESC LIMIT 1",
        (video_id,)).fetchone()


def tracked_prompts(db_or_conn, video_id: int) -> dict[int, tuple[int, list[int]]]:
    """object -> (prompt_version, effective prompt ids) when the latest job started ({}
    when the video was never tracked)."""
    row = latest_job_plan(db_or_conn, video_id)
    if row is None or row["prompts"] is None:
        return {}
    return {int(o): (int(v), list(ids)) for o, (v, ids) in json.loads(row["prompts"]).items()}


def mark_interrupted_jobs(db: Database) -> None:
    """Jobs still 'running' in the file were cut off by a crash or a stop."""
    with db.transaction() as conn:
        conn.execute("UPDATE jobs SET state = 'interrupted', finished_at = ? "
                     "WHERE state = 'running'", (time.time(),))
