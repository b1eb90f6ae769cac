"""Listing the folders the server may open, for the page's "open by path" browser."""

from __future__ import annotations

from pathlib import Path

from masklet.app.errors import AppError
from masklet.app.media import IMAGE_SUFFIXES, PathPolicy, count_frames

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg")
MAX_ENTRIES = 2000  # a huge folder is cut short rather than freezing the page


def _entry(path: Path) -> dict | None:
    if path.name.startswith("."):
        return None
    if path.is_dir():
        return {"name": path.name, "path": str(path), "type": "dir", "frames": count_frames(path)}
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        kind = "video"
    elif suffix in IMAGE_SUFFIXES:
        kind = "image"
    else:
        return None
    return {"name": path.name, "path": str(path), "type": kind, "frames": 0}


def browse(policy: PathPolicy, raw: str | None) -> dict:
    """``{path, parent, entries}``: the roots when `raw` is empty, else one folder's content.

    `parent` is None for a root (going up leads back to the list of roots).
    """
    if not raw:
        entries = [{"name": str(root), "path": str(root), "type": "dir",
                    "frames": count_frames(root)} for root in policy.roots]
        return {"path": None, "parent": None, "entries": entries}
    folder = policy.resolve(raw)
    if not folder.is_dir():
        raise AppError(400, f"{raw} is not a folder")
    parent = None if folder in policy.roots else str(folder.parent)
    try:
        children = sorted(folder.iterdir(), key=lambda p: (not p.is_dir(), p.name.lower()))
    except OSError as err:
        raise AppError(403, f"{raw}: cannot list the folder ({err.strerror})") from None
    entries = []
    for child in children:
        try:
            entry = _entry(child)
        except OSError:  # a broken link or a file without permission: not offered
            entry = None
        # Links that lead out of the roots are not offered.
        if entry is not None and policy.inside(child.resolve()):
            entries.append(entry)
        if len(entries) >= MAX_ENTRIES:
            break
    return {"path": str(folder), "parent": parent, "entries": entries}
