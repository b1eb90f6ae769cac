"""Crash-safe writes: a file or a whole folder appears complete or not at all.

Every output of masklet goes through these helpers. The pattern is always the
same: write into a hidden sibling (same directory, hence same filesystem, so
the final ``os.replace``/``os.rename`` is atomic), flush it to disk, then move
it into place. On any exception, including ``KeyboardInterrupt``, the sibling
is removed and the destination is left untouched.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["PendingFile", "atomic_write", "atomic_path", "atomic_dir"]

PathLike = str | os.PathLike


@functools.cache
def _umask() -> int:
    # os.umask can only be read by setting it; do it once per process.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Persist a rename inside `directory` (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class PendingFile:
    """A hidden temporary file next to `path` that is either committed or discarded.

    The temporary name keeps the destination's extension (``.out.x1y2.tmp.mp4``)
    so tools that pick a format from the file name (PyAV, PIL) still work on it.
    It is created with the permissions a plain ``open(path, "w")`` would give.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            # Checked first: os.replace would fail only at commit, naming the temp file.
            raise IsADirectoryError(f"cannot write the file {self.path}: it is a folder")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.stem}.", suffix=f".tmp{self.path.suffix}", dir=self.path.parent
        )
        os.close(fd)
        self.tmp_path = Path(tmp)
        # mkstemp creates the file 0600; outputs should be as readable as normal files.
        os.chmod(self.tmp_path, 0o666 & ~_umask())
        self._done = False

    def commit(self) -> None:
        """Flush the temporary file to disk and atomically move it onto `path`."""
        if self._done:
            raise RuntimeError(f"{self.path} was already committed or discarded")
        _fsync_file(self.tmp_path)
        os.replace(self.tmp_path, self.path)
        self._done = True
        _fsync_dir(self.path.parent)

    def discard(self) -> None:
        """Remove the temporary file; the destination is not touched. Idempotent."""
        if self._done:
            return
        self._done = True
        self.tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path to write to; it replaces `path` when the block succeeds.

    For writers that want a file name rather than a file object (e.g. PyAV).
    """
    pending = PendingFile(path)
    try:
        yield pending.tmp_path
        pending.commit()
    finally:
        pending.discard()  # no-op after a successful commit


@contextmanager
def atomic_write(
    path: PathLike, mode: str = "wb", *, encoding: str | None = None
) -> Iterator[IO]:
    """Open a file object whose contents replace `path` only if the block succeeds.

    Args:
        path: destination file; its parent folders are created.
        mode: ``"wb"`` (bytes) or ``"w"`` (text).
        encoding: text encoding for ``mode="w"`` (default UTF-8).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write supports mode 'w' or 'wb', got {mode!r}")
    if mode == "w" and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=encoding) as f:
            yield f


def _ensure_replaceable(target: Path, overwrite: bool) -> None:
    if not target.exists() and not target.is_symlink():
        return
    if not target.is_dir() or target.is_symlink():
        raise FileExistsError(f"{target} exists and is not a directory")
    if not overwrite and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty (pass overwrite=True to replace it)")


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync_file(Path(folder, name))
        _fsync_dir(Path(folder))


def _move_into_place(tmp_dir: Path, target: Path) -> None:
    """Rename `tmp_dir` to `target`, first moving an existing `target` aside."""
    if not target.exists():
        os.rename(tmp_dir, target)
        return
    # rename(2) cannot replace a non-empty directory, so swap via a trash sibling;
    # the window in which `target` is missing is two renames long.
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    try:
        os.rename(target, trash / "old")
        try:
            os.rename(tmp_dir, target)
        except BaseException:
            os.rename(trash / "old", target)
            raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def atomic_dir(path: PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder to fill; it is renamed to `path` when the block succeeds.

    Files written inside need no special care: they are all fsync'ed before the rename.

    Args:
        path: destination folder; its parent folders are created.
        overwrite: replace an existing non-empty folder. Without it a non-empty
            folder raises ``FileExistsError`` (checked before and after the block);
            an empty one is always replaced.
    """
    target = Path(path)
    _ensure_replaceable(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(tmp_dir, 0o777 & ~_umask())
        yield tmp_dir
        _ensure_replaceable(target, overwrite)
        _fsync_tree(tmp_dir)
        _move_into_place(tmp_dir, target)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    _fsync_dir(target.parent)
