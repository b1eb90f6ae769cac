"""Zip entries with fixed metadata, so that an export's bytes depend on its content only.

`zipfile` stamps each entry with the current time (`writestr`) or the source file's
modification time (`write`), so exporting the same annotation twice gave different
bytes. Users compare and checksum exports, and the app's tests check that an
unrelated edit leaves an export unchanged: every entry gets the DOS epoch instead.
"""

from __future__ import annotations

import zipfile

FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can record


def write_entry(zf: zipfile.ZipFile, name: str, data: bytes | str) -> None:
    """Add `data` as `name` (a regular file, mode 0644) with the archive's compression."""
    info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
    info.compress_type = zf.compression
    info.external_attr = 0o100644 << 16  # a regular file readable by all, as zip tools expect
    zf.writestr(info, data)
