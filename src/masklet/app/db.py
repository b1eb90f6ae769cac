"""The app's SQLite database: schema, per-thread connections and write transactions.

Everything the user makes is written here as it is made (one transaction per click and
per tracked frame), so a crash loses at most the action in flight. WAL mode lets the
page read masks while a tracking thread writes; ``synchronous=NORMAL`` keeps every
committed transaction across a process crash (only a power cut can drop the last ones).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS videos (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('video', 'images')),
    source      TEXT NOT NULL CHECK (source IN ('upload', 'path')),
    location    TEXT NOT NULL,
    num_frames  INTEGER NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    fps         REAL,
    frame_names TEXT NOT NULL,          -- JSON list of file / frame names
    frame_sizes TEXT,                   -- JSON [[w, h], ...] for kind 'images', else NULL
    version     INTEGER NOT NULL DEFAULT 0,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    video_id       INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    id             INTEGER NOT NULL CHECK (id BETWEEN 1 AND 255),
    name           TEXT NOT NULL,
    color          TEXT NOT NULL,
    created_at     REAL NOT NULL,
    prompt_version INTEGER NOT NULL DEFAULT 0,  -- video version of its last prompt change
    label_id       INTEGER REFERENCES labels(id) ON DELETE SET NULL,  -- NULL: unlabelled
    PRIMARY KEY (video_id, id)
);
-- The project's label set (the data folder's, shared by its videos); app/labels.py.
CREATE TABLE IF NOT EXISTS labels (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused: COCO category ids
    name    TEXT UNIQUE NOT NULL,
    color   TEXT NOT NULL,
    yolo_id INTEGER UNIQUE                  -- class id of the YOLO export; NULL: by position
);
CREATE TABLE IF NOT EXISTS actions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id   INTEGER NOT NULL,
    group_id   INTEGER NOT NULL,            -- undo / redo step (one mask import = one group)
    frame      INTEGER NOT NULL,
    obj        INTEGER NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('point', 'box', 'mask', 'clear')),
    points     TEXT,                        -- JSON [[x, y], ...]
    labels     TEXT,                        -- JSON [1, 0, ...]
    box        TEXT,                        -- JSON [x0, y0, x1, y1]
    mask_rle   TEXT,                        -- COCO RLE counts of an imported mask
    undone     INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    FOREIGN KEY (video_id, obj) REFERENCES objects(video_id, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS actions_by_object ON actions(video_id, obj, frame);
CREATE TABLE IF NOT EXISTS masks (
    video_id INTEGER NOT NULL,
    frame    INTEGER NOT NULL,
    obj      INTEGER NOT NULL,
    source   TEXT NOT NULL CHECK (source IN ('prompt', 'track')),
    rle      TEXT NOT NULL,                 -- COCO RLE counts; the size is the frame's
    area     INTEGER NOT NULL,
    version  INTEGER NOT NULL,              -- video version when it was made
    PRIMARY KEY (video_id, frame, obj, source),
    FOREIGN KEY (video_id, obj) REFERENCES objects(video_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id    INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    state       TEXT NOT NULL,
    direction   TEXT NOT NULL,
    done        INTEGER NOT NULL DEFAULT 0,
    total       INTEGER NOT NULL,
    frame       INTEGER,
    error       TEXT,
    started_at  REAL NOT NULL,
    finished_at REAL
);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id INTEGER NOT NULL REFERENCES videos(id) ON DELETE CASCADE,
    t        REAL NOT NULL,
    kind     TEXT NOT NULL,
    obj      INTEGER,
    frame    INTEGER,
    clicks   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_video ON events(video_id, t);
-- The prompt mask of an action's (frame, object) right after the action: undo and redo
-- show exactly what the user saw then, whatever the model state is now.
CREATE TABLE IF NOT EXISTS action_masks (
    action_id INTEGER PRIMARY KEY REFERENCES actions(id) ON DELETE CASCADE,
    rle       TEXT NOT NULL
);
-- What a tracking job was asked for and the prompts it tracked, per object
-- {"<object id>": [its prompt_version, [effective action ids]]}: resuming the job and
-- telling whether an object's prompts are back to the tracked ones.
CREATE TABLE IF NOT EXISTS job_plans (
    job_id     INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
    start      INTEGER NOT NULL,
    max_frames INTEGER,
    prompts    TEXT NOT NULL,
    resumed    INTEGER NOT NULL DEFAULT 0,  -- frames kept from the job it resumed
    motion     INTEGER NOT NULL DEFAULT 0   -- 1: motion-aware tracking (SAMURAI)
);
-- Review hints (app/review.py): what the model said about each tracked frame and object,
-- and its "needs review" score; written with the frame's masks. box: NULL when empty.
CREATE TABLE IF NOT EXISTS frame_signals (
    video_id     INTEGER NOT NULL,
    frame        INTEGER NOT NULL,
    obj          INTEGER NOT NULL,
    object_score REAL NOT NULL,
    iou          REAL,
    area         INTEGER NOT NULL,
    x0 REAL, y0 REAL, x1 REAL, y1 REAL,
    motion       REAL,
    score        REAL NOT NULL,
    flagged      INTEGER NOT NULL,          -- with the threshold of the time
    prompted     INTEGER NOT NULL DEFAULT 0, -- the object has prompts there: not shown
    version      INTEGER NOT NULL,
    PRIMARY KEY (video_id, frame, obj),
    FOREIGN KEY (video_id, obj) REFERENCES objects(video_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
-- Frames and objects the annotator looked at (review/seen) or edited.
CREATE TABLE IF NOT EXISTS reviewed (
    video_id INTEGER NOT NULL,
    frame    INTEGER NOT NULL,
    obj      INTEGER NOT NULL,
    at       REAL NOT NULL,
    PRIMARY KEY (video_id, frame, obj),
    FOREIGN KEY (video_id, obj) REFERENCES objects(video_id, id) ON DELETE CASCADE
) WITHOUT ROWID;
"""
# Columns added after their table first shipped: (table, column, declaration). A data
# folder made before one was added gets it when opened (old rows take the default).
ADDED_COLUMNS = (
    ("job_plans", "motion", "INTEGER NOT NULL DEFAULT 0"),
    ("objects", "label_id", "INTEGER REFERENCES labels(id) ON DELETE SET NULL"),
    # 0 for the media opened before frames were read upright: they keep the stored grid.
    ("videos", "upright", "INTEGER NOT NULL DEFAULT 0"),
)


class Database:
    """One SQLite file shared by the server's threads, each with its own connection.

    Reads run in autocommit mode; writes go through `transaction()`, which takes the
    write lock up front (BEGIN IMMEDIATE) so two writers never deadlock on an upgrade.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._create_schema()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        with self._all_lock:
            self._all.append(conn)
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _create_schema(self) -> None:
        # executescript commits on its own; the statements are idempotent.
        self.conn.executescript(SCHEMA)
        for table, column, declaration in ADDED_COLUMNS:
            have = {r["name"] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed when the block ends, rolled back on any error."""
        conn = self.conn
        if conn.in_transaction:
            raise RuntimeError("nested write transaction")
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def query_one(self, sql: str, params: tuple = ()) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class DataDirBusy(RuntimeError):
    """Another process serves the same data folder."""


class DataDirLock:
    """An exclusive lock on a data folder for this process's lifetime.

    Locking and versioning are per process (in memory), so a second server on the same
    folder would break them; the kernel drops the lock when a process dies, even killed.
    """

    def __init__(self, folder: Path) -> None:
        self._file = open(folder / "server.lock", "a+")  # noqa: SIM115 (held until release)
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one server per folder is the user's job
            return
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            raise DataDirBusy(f"another masklet server is using {folder}; stop it or pass "
                              "another --data-dir") from None

    def release(self) -> None:
        self._file.close()  # closing the file drops the lock
