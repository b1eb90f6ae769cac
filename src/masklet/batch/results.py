"""results.jsonl: the append-only record of a batch run, and what makes a rerun resumable.

One JSON line per finished video (status "ok" or "failed"), appended with a single write
and fsync'ed, so a crash can at worst leave a torn last line, which reading skips. A video
counts as done when its latest record is "ok" for the same job key (the line's options and
the model) and its folder exists: its folder is renamed into place in one step, so existing
means complete. Anything else is redone on the next run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

RESULTS_NAME = "results.jsonl"


def job_key(spec: dict, run: dict) -> str:
    """A short fingerprint of one manifest line plus the run's model and output options:
    a rerun with other prompts or another model redoes the video instead of skipping it."""
    text = json.dumps({"line": spec, "run": run}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ResultsLog:
    """`OUT_DIR/results.jsonl`: read the latest record per video, append new ones."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / RESULTS_NAME

    def latest(self) -> dict[str, dict]:
        """The last well-formed record of each video name (a torn line is skipped)."""
        records: dict[str, dict] = {}
        if not self.path.exists():
            return records
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for raw in f:
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("name"), str):
                    records[record["name"]] = record
        return records

    def append(self, record: dict) -> None:
        """Add one record as one line, on disk before returning."""
        record = {**record, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        data = (json.dumps(record, sort_keys=False) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            if os.fstat(fd).st_size and not _ends_with_newline(fd):
                data = b"\n" + data  # a torn last line from a crash stays on its own line
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def _ends_with_newline(fd: int) -> bool:
    return os.pread(fd, 1, os.fstat(fd).st_size - 1) == b"\n"


def is_done(out_dir: Path, name: str, key: str, record: dict | None) -> bool:
    """The video's folder is complete and was made from the same job."""
    return (record is not None and record.get("status") == "ok" and record.get("key") == key
            and (Path(out_dir) / name).is_dir())


def sweep_partial(out_dir: Path, names: Iterable[str]) -> int:
    """Remove the hidden half-written siblings (`.NAME.xxxxxxxx.tmp` / `.old`) that
    `atomic_dir` leaves when its process is killed outright; returns how many. Only call it
    while no worker writes these videos."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    wanted = set(names)
    removed = 0
    for entry in out_dir.iterdir():
        match = re.fullmatch(r"\.(.+)\.[a-z0-9_]{8}\.(tmp|old)", entry.name)
        if match and match.group(1) in wanted and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
