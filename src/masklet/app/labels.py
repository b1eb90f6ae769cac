"""The project's label set: what each object is (a name, a colour, an optional YOLO class id).

Labels belong to the data folder, not to one video: every video's objects pick from the
same set, so COCO category ids and YOLO class ids agree across a project's exports. The
set is edited through the API or merged from a `masklet serve --labels FILE` at start.

A labels file is either a JSON list ``[{"name": str, "color": "#rrggbb"?, "yolo_id":
int?}, ...]`` (a ``.json`` file, or text starting with ``[`` or ``{``) or plain text, one
name per line (blank lines and lines starting with ``#`` are skipped). Merging updates
the labels whose names exist and adds the others; a file that does not parse, or whose
entries clash, changes nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from masklet.app.db import Database
from masklet.app.errors import AppError, conflict, not_found
from masklet.app.maskcodec import check_color, default_color

MAX_LABELS = 1000
MAX_NAME = 200
MAX_YOLO_ID = 9999  # data.yaml lists every class id up to the largest
MAX_FILE_BYTES = 1024 * 1024
# The COCO category of objects without a label (label ids start at 1).
UNLABELLED = {"id": 0, "name": "unlabelled"}


@dataclass(frozen=True)
class LabelSpec:
    """One label as a file or a request gives it (None: not given)."""

    name: str
    color: str | None = None
    yolo_id: int | None = None


def clean_name(name: object) -> str:
    """A label name with runs of white space made single; ValueError when unusable."""
    if not isinstance(name, str):
        raise ValueError("a label name must be a string")
    cleaned = " ".join(name.split())
    if not cleaned or len(cleaned) > MAX_NAME:
        raise ValueError(f"a label name must have 1 to {MAX_NAME} characters")
    return cleaned


def check_yolo_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"a YOLO id must be an integer, got {value!r}")
    if not 0 <= value <= MAX_YOLO_ID:
        raise ValueError(f"a YOLO id must be 0..{MAX_YOLO_ID}, got {value}")
    return value


def spec_of(name: object, color: object = None, yolo_id: object = None) -> LabelSpec:
    """A validated `LabelSpec` (ValueError with a one-line message otherwise)."""
    return LabelSpec(clean_name(name), None if color is None else check_color(color),
                     None if yolo_id is None else check_yolo_id(yolo_id))


# ------------------------------------------------------------------ labels file
def parse_label_file(path: Path) -> list[LabelSpec]:
    """The labels of a `--labels` file; ValueError("<file>: ...") when it is malformed."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"{path}: a labels file holds at most {MAX_FILE_BYTES // 1024} KB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    try:
        as_json = Path(path).suffix.lower() == ".json" or text.lstrip()[:1] in ("[", "{")
        specs = _parse_json(text) if as_json else _parse_lines(text)
        _check_unique(specs)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return specs


def _parse_json(text: str) -> list[LabelSpec]:
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(entries, list):
        raise ValueError("the JSON must be a list of labels")
    specs = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise ValueError(f"label {i} must be an object like {{\"name\": \"cat\"}}")
        unknown = sorted(set(entry) - {"name", "color", "yolo_id"})
        if unknown:
            raise ValueError(f"label {i} has unknown key {unknown[0]!r} "
                             "(keys: name, color, yolo_id)")
        if "name" not in entry:
            raise ValueError(f"label {i} has no name")
        try:
            specs.append(spec_of(entry["name"], entry.get("color"), entry.get("yolo_id")))
        except ValueError as err:
            raise ValueError(f"label {i}: {err}") from None
    return specs


def _parse_lines(text: str) -> list[LabelSpec]:
    specs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            specs.append(spec_of(line))
        except ValueError as err:
            raise ValueError(f"line {number}: {err}") from None
    return specs


def _check_unique(specs: list[LabelSpec]) -> None:
    if not specs:
        raise ValueError("the file lists no labels")
    if len(specs) > MAX_LABELS:
        raise ValueError(f"a label set holds at most {MAX_LABELS} labels")
    names, ids = set(), set()
    for spec in specs:
        if spec.name in names:
            raise ValueError(f"label {spec.name!r} is listed twice")
        if spec.yolo_id is not None and spec.yolo_id in ids:
            raise ValueError(f"YOLO id {spec.yolo_id} is given twice")
        names.add(spec.name)
        ids.add(spec.yolo_id)


# --------------------------------------------------------------------- the table
def label_json(row: sqlite3.Row) -> dict:
    return {"id": row["id"], "name": row["name"], "color": row["color"],
            "yolo_id": row["yolo_id"]}


def list_labels(db_or_conn) -> list[dict]:
    """The label set in id order (the "label list" whose positions YOLO ids default to)."""
    conn = db_or_conn.conn if isinstance(db_or_conn, Database) else db_or_conn
    return [label_json(r) for r in conn.execute("SELECT * FROM labels ORDER BY id")]


def check_label(conn: sqlite3.Connection, label_id: int) -> None:
    """422 unless `label_id` is in the set (called inside the writing transaction)."""
    if conn.execute("SELECT 1 FROM labels WHERE id = ?", (label_id,)).fetchone() is None:
        raise AppError(422, f"unknown label {label_id}")


def _clash(conn: sqlite3.Connection, spec: LabelSpec, own_id: int | None) -> str | None:
    """Why `spec` cannot be stored next to the other labels (None: it can)."""
    row = conn.execute("SELECT id FROM labels WHERE name = ?", (spec.name,)).fetchone()
    if row is not None and row["id"] != own_id:
        return f"a label named {spec.name!r} exists (id {row['id']})"
    if spec.yolo_id is not None:
        row = conn.execute("SELECT id, name FROM labels WHERE yolo_id = ?",
                           (spec.yolo_id,)).fetchone()
        if row is not None and row["id"] != own_id:
            return f"YOLO id {spec.yolo_id} belongs to label {row['name']!r}"
    return None


def _insert(conn: sqlite3.Connection, spec: LabelSpec) -> int:
    count = conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    if count >= MAX_LABELS:
        raise conflict(f"a label set holds at most {MAX_LABELS} labels")
    color = spec.color or default_color(1 + count % 255)
    cur = conn.execute("INSERT INTO labels (name, color, yolo_id) VALUES (?, ?, ?)",
                       (spec.name, color, spec.yolo_id))
    return int(cur.lastrowid)


class LabelBook:
    """The API operations on the label set; each write is one transaction."""

    def __init__(self, db: Database, on_change: Callable[[], None] = lambda: None) -> None:
        self.db = db
        self._on_change = on_change  # after each committed change (open pages reload labels)

    def row(self, label_id: int) -> sqlite3.Row:
        row = self.db.query_one("SELECT * FROM labels WHERE id = ?", (label_id,))
        if row is None:
            raise not_found(f"no label with id {label_id}")
        return row

    def create(self, name: object, color: object, yolo_id: object) -> dict:
        spec = _valid(name, color, yolo_id)
        with self.db.transaction() as conn:
            why = _clash(conn, spec, None)
            if why:
                raise conflict(why)
            label_id = _insert(conn, spec)
        self._on_change()
        return label_json(self.row(label_id))

    def update(self, label_id: int, changes: dict) -> dict:
        """Change the given fields of a label (``yolo_id`` None clears it)."""
        for key in ("name", "color"):
            if key in changes and changes[key] is None:
                raise AppError(400, f"a label's {key} cannot be null")
        with self.db.transaction() as conn:
            old = conn.execute("SELECT * FROM labels WHERE id = ?", (label_id,)).fetchone()
            if old is None:
                raise not_found(f"no label with id {label_id}")
            merged = {"name": old["name"], "color": old["color"], "yolo_id": old["yolo_id"],
                      **changes}
            spec = _valid(merged["name"], merged["color"], merged["yolo_id"])
            why = _clash(conn, spec, label_id)
            if why:
                raise conflict(why)
            conn.execute("UPDATE labels SET name = ?, color = ?, yolo_id = ? WHERE id = ?",
                         (spec.name, spec.color, spec.yolo_id, label_id))
        self._on_change()
        return label_json(self.row(label_id))

    def delete(self, label_id: int) -> None:
        """Drop a label; its objects become unlabelled (ON DELETE SET NULL)."""
        with self.db.transaction() as conn:
            if conn.execute("DELETE FROM labels WHERE id = ?", (label_id,)).rowcount == 0:
                raise not_found(f"no label with id {label_id}")
        self._on_change()

    def merge(self, specs: list[LabelSpec]) -> tuple[int, int]:
        """Merge a labels file: names that exist are updated with what the file gives,
        the others added. All or nothing; ValueError on a clash. Returns (added, updated)."""
        added = updated = 0
        with self.db.transaction() as conn:
            # Free the file's YOLO ids first, so that a file may swap two labels' ids.
            given = [s.name for s in specs if s.yolo_id is not None]
            conn.executemany("UPDATE labels SET yolo_id = NULL WHERE name = ?",
                             [(n,) for n in given])
            for spec in specs:
                old = conn.execute("SELECT * FROM labels WHERE name = ?",
                                   (spec.name,)).fetchone()
                why = _clash(conn, spec, None if old is None else old["id"])
                if why:
                    raise ValueError(why)
                if old is None:
                    if conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0] >= MAX_LABELS:
                        raise ValueError(f"a label set holds at most {MAX_LABELS} labels")
                    _insert(conn, spec)
                    added += 1
                    continue
                conn.execute("UPDATE labels SET color = ?, yolo_id = ? WHERE id = ?",
                             (spec.color or old["color"],
                              spec.yolo_id if spec.yolo_id is not None else old["yolo_id"],
                              old["id"]))
                updated += 1
        self._on_change()
        return added, updated


def _valid(name: object, color: object, yolo_id: object) -> LabelSpec:
    try:
        return spec_of(name, color, yolo_id)
    except ValueError as err:
        raise AppError(400, str(err)) from None


# ------------------------------------------------------------------- exports
def yolo_classes(labels: list[dict]) -> dict[int, int]:
    """label id -> YOLO class id: its ``yolo_id``, else the lowest class id no label
    claims, handed out in label-list order (so with no YOLO ids given, the position)."""
    taken = {lab["yolo_id"] for lab in labels if lab["yolo_id"] is not None}
    out, free = {}, 0
    for lab in labels:
        if lab["yolo_id"] is not None:
            out[lab["id"]] = lab["yolo_id"]
            continue
        while free in taken:
            free += 1
        out[lab["id"]] = free
        taken.add(free)
    return out


def coco_categories(labels: list[dict], objects: list[dict]
                    ) -> tuple[list[dict], dict[int, int]]:
    """(COCO categories, object id -> category id): one category per label (id and name
    of the label), and `UNLABELLED` for objects without one, listed only when used."""
    categories = [{"id": lab["id"], "name": lab["name"]} for lab in labels]
    category_of = {o["id"]: o["label"] if o["label"] is not None else UNLABELLED["id"]
                   for o in objects}
    if UNLABELLED["id"] in category_of.values():
        categories.insert(0, dict(UNLABELLED))
    return categories, category_of
