"""The YOLO-seg export: one polygon per object and frame, in Ultralytics' label format.

Layout (a zip written atomically, ``<name>_yolo.zip``)::

    <name>/data.yaml          names by class id (and where the images go)
    <name>/labels/<frame>.txt one line per labelled object: class x1 y1 x2 y2 ... (0..1)

The frame name is the source file's stem for frame folders and image sets, else the
frame index (00000, 00001, ...). Class ids come from `labels.yolo_classes`. Objects with
no label are left out (the caller counts them); a frame whose masks are all empty gets an
empty file (nothing there), a frame with only unlabelled masks gets none.

Outlines follow pixel edges (the "crack" boundary), so a polygon filled again gives back
its pixels exactly. A mask's holes are filled (YOLO polygons have none). A mask in
several parts stays one line, one object: its parts' outlines are joined by zero-width
bridges between their nearest corners (what Ultralytics' own COCO converter does), so
the line still fills to the parts.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
from scipy import ndimage

from masklet.app.maskcodec import decode_rle
from masklet.app.media import Media
from masklet.app.zips import write_entry
from masklet.export import atomic_write

# Four-connected components (ndimage's default structure in 2-D).
_CROSS = ndimage.generate_binary_structure(2, 1)


def _outline(component: np.ndarray) -> np.ndarray:
    """[K, 2] (x, y) corners of the outline of one 4-connected component without holes,
    clockwise on screen, one corner per change of direction.

    Every pixel edge between the component and the outside is a step of the outline: top
    edges run right, right edges down, bottom edges left, left edges up. Without holes
    and with 4-connectivity no corner is touched twice, so each corner has one successor.
    """
    h, w = component.shape
    pad = np.pad(component, 1)
    inner = pad[1:-1, 1:-1]
    succ = np.full((h + 1) * (w + 1), -1, dtype=np.int64)
    ys, xs = np.nonzero(inner & ~pad[:-2, 1:-1])  # top edges: (x, y) -> (x + 1, y)
    succ[ys * (w + 1) + xs] = ys * (w + 1) + xs + 1
    ys, xs = np.nonzero(inner & ~pad[1:-1, 2:])  # right edges: (x+1, y) -> (x+1, y+1)
    succ[ys * (w + 1) + xs + 1] = (ys + 1) * (w + 1) + xs + 1
    ys, xs = np.nonzero(inner & ~pad[2:, 1:-1])  # bottom edges: (x+1, y+1) -> (x, y+1)
    succ[(ys + 1) * (w + 1) + xs + 1] = (ys + 1) * (w + 1) + xs
    ys, xs = np.nonzero(inner & ~pad[1:-1, :-2])  # left edges: (x, y+1) -> (x, y)
    succ[(ys + 1) * (w + 1) + xs] = ys * (w + 1) + xs
    start = int(np.flatnonzero(succ >= 0)[0])
    loop, at = [start], int(succ[start])
    while at != start:
        loop.append(at)
        at = int(succ[at])
    corners = np.array(loop, dtype=np.int64)
    pts = np.stack([corners % (w + 1), corners // (w + 1)], axis=1)
    # Keep the corners where the direction changes (the others lie on a straight run).
    step_in = pts - np.roll(pts, 1, axis=0)
    step_out = np.roll(pts, -1, axis=0) - pts
    return pts[np.any(step_in != step_out, axis=1)]


def mask_parts(mask: np.ndarray) -> list[np.ndarray]:
    """Outlines ([K, 2] pixel-corner x, y) of a mask's parts [H, W] bool, largest first.

    Holes are filled first, so a part inside another's hole joins it."""
    filled = ndimage.binary_fill_holes(mask, structure=_CROSS)
    labels, count = ndimage.label(filled, structure=_CROSS)
    if count == 0:
        return []
    sizes = np.bincount(labels.ravel())[1:]
    boxes = ndimage.find_objects(labels)
    out = []
    for i in np.argsort(-sizes, kind="stable"):
        rows, cols = boxes[i]  # traced inside its box, then moved back
        outline = _outline(labels[rows, cols] == i + 1)
        out.append(outline + np.array([cols.start, rows.start]))
    return out


def join_parts(parts: list[np.ndarray]) -> np.ndarray:
    """One outline through all `parts`: each next part is entered and left at its corner
    nearest the outline so far (a zero-width bridge there and back)."""
    joined = parts[0]
    for part in parts[1:]:
        gaps = ((joined[:, None, :] - part[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(gaps)), gaps.shape)
        tour = np.concatenate([part[j:], part[: j + 1]])  # around the part, back to j
        joined = np.concatenate([joined[: i + 1], tour, joined[i:]])
    return joined


def polygon_line(cls: int, outline: np.ndarray, width: int, height: int) -> str:
    """A YOLO-seg label line: class, then x y pairs normalised by the frame size."""
    coords = (outline / np.array([width, height], dtype=np.float64)).ravel()
    return " ".join([str(cls), *(f"{v:.6f}" for v in coords)])


def frame_stems(media: Media) -> list[str]:
    """The label file name (without .txt) of each frame."""
    if media.kind == "images" or media.location.is_dir():
        return [Path(n).stem for n in media.frame_names]
    return [f"{i:05d}" for i in range(media.num_frames)]


def data_yaml(names: dict[int, str], title: str) -> str:
    """data.yaml: Ultralytics' dataset file (names as JSON strings, valid YAML).

    Ultralytics wants class ids below the number of names, so ids no label has (gaps
    left by explicit YOLO ids) get a placeholder name ``unused_<id>``."""
    count = max(names) + 1 if names else 0
    lines = [f"# masklet YOLO-seg export of {json.dumps(title)}.",
             "# Put the frames in images/ beside labels/ (same names, .jpg or .png):",
             "# Ultralytics finds each image's labels by its name.",
             "path: .", "train: images", "val: images", f"nc: {count}",
             "names:" if count else "names: {}"]
    lines += [f"  {cls}: {json.dumps(names.get(cls, f'unused_{cls}'))}" for cls in range(count)]
    return "\n".join(lines) + "\n"


def write_yolo(target: Path, stem: str, media: Media,
               snapshot: dict[int, list[tuple[int, str, int]]],
               class_of: dict[int, int], names: dict[int, str]) -> int:
    """Write the export zip at `target`; returns how many objects with a mask were left
    out for having no label.

    snapshot: frame -> [(object id, RLE counts, area)] of the shown non-empty masks;
    class_of: object id -> YOLO class id (labelled objects only); names: class -> name.
    """
    unlabelled: set[int] = set()
    with atomic_write(target) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        write_entry(zf, f"{stem}/data.yaml", data_yaml(names, stem))
        for frame, name in enumerate(frame_stems(media)):
            w, h = media.frame_size(frame)
            masks = snapshot.get(frame, [])
            lines = []
            for obj, counts, _ in sorted(masks):
                if obj not in class_of:
                    unlabelled.add(obj)
                    continue
                parts = mask_parts(decode_rle(counts, h, w))
                if parts:
                    lines.append(polygon_line(class_of[obj], join_parts(parts), w, h))
            if lines or not masks:
                write_entry(zf, f"{stem}/labels/{name}.txt", "".join(x + "\n" for x in lines))
    return len(unlabelled)
