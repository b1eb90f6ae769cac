"""Exports of a video's current masks: DAVIS PNGs, COCO RLE, SA-V JSON, overlay video.

The masks exported are the ones shown (per frame and object, the newer of the prompt
and tracked masks). Frames are decoded one at a time, so a long video never sits in
memory whole. The PNG and overlay writers are masklet's own (`masklet.export`); the
COCO and SA-V files are assembled from the stored COCO RLEs directly, in the layout
of `video_masks_to_coco` / `video_masks_to_sav` / `image_masks_to_coco` (a test checks
that the files are identical to theirs), with one COCO category per label of the project
(app/labels.py). The YOLO-seg zip is app/yolo.py's. Every file is written atomically.
"""

from __future__ import annotations

import io
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from masklet.app import store
from masklet.app.errors import AppError, not_found
from masklet.app.labels import coco_categories, list_labels, yolo_classes
from masklet.app.maskcodec import decode_rle, label_map
from masklet.app.media import Media
from masklet.app.yolo import write_yolo
from masklet.app.zips import write_entry
from masklet.export import (
    OverlayVideoWriter,
    atomic_write,
    davis_palette,
    encode_coco_rle,
    overlay_masks,
    write_davis_sequence,
    write_json,
)

FORMATS = ("davis", "coco", "sav", "overlay", "yolo", "review-csv")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

if TYPE_CHECKING:
    from masklet.app.service import AnnotationService

# frame -> [(object id, COCO RLE counts, area)], non-empty masks only
Snapshot = dict[int, list[tuple[int, str, int]]]


class LabelMaps(Mapping):
    """Frame key -> uint8 label map [H, W], decoded when asked for (a lazy mapping)."""

    def __init__(self, media: Media, snapshot: Snapshot, keys: list) -> None:
        self.media, self.snapshot, self.keys = media, snapshot, keys
        self._index = {key: i for i, key in enumerate(keys)}

    def frame(self, idx: int) -> np.ndarray:
        w, h = self.media.frame_size(idx)
        masks = {obj: decode_rle(rle, h, w) for obj, rle, _ in self.snapshot.get(idx, [])}
        return label_map(masks, h, w)

    def __getitem__(self, key) -> np.ndarray:
        return self.frame(self._index[key])

    def __iter__(self) -> Iterator:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


def _palette(objects: list[dict]) -> np.ndarray:
    palette = davis_palette()
    for obj in objects:
        palette[obj["id"]] = [int(obj["color"][i : i + 2], 16) for i in (1, 3, 5)]
    return palette


def _annotation(counts: str, h: int, w: int, area: int, **fields) -> dict:
    """`masklet.export.coco_annotation` of a stored mask, without decoding it."""
    rle = {"size": [h, w], "counts": counts}
    bbox = mask_utils.toBbox({"size": [h, w], "counts": counts.encode("ascii")})
    return {**fields, "segmentation": rle, "area": area, "bbox": [float(v) for v in bbox],
            "iscrowd": 0}


class Exporter:
    """Writes exports under ``<data dir>/exports/<video id>/`` and finds them again."""

    def __init__(self, svc: AnnotationService) -> None:
        self.svc = svc

    def folder(self, video_id: int) -> Path:
        return self.svc.data_dir / "exports" / str(video_id)

    def export(self, video_id: int, fmt: str) -> dict:
        svc = self.svc
        if fmt not in FORMATS:
            raise AppError(400, f"format must be one of {', '.join(FORMATS)}")
        row = svc.video_row(video_id)
        media = store.media_of(row)
        if fmt == "sav" and media.kind != "video":
            raise AppError(400, "SA-V JSON is for videos; export image sets as COCO")
        if fmt == "review-csv" and media.kind != "video":
            raise AppError(400, "review hints are for videos: images are not tracked")
        snapshot: Snapshot = {}
        for r in store.shown_masks(svc.db, video_id):
            if r["area"] > 0:
                snapshot.setdefault(r["frame"], []).append((r["obj"], r["rle"], r["area"]))
        objects = store.objects(svc.db, video_id)
        stem = _SAFE.sub("_", row["name"]).strip("._") or f"video{video_id}"
        if fmt == "yolo":
            return self._yolo(video_id, media, snapshot, objects, stem)
        write = {"davis": self._davis, "coco": self._coco, "sav": self._sav,
                 "overlay": self._overlay, "review-csv": self._review_csv}[fmt]
        path = write(video_id, media, snapshot, objects, stem)
        return self._describe(video_id, fmt, path)

    def listing(self, video_id: int) -> list[dict]:
        self.svc.video_row(video_id)
        folder = self.folder(video_id)
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.iterdir()):
            fmt = path.stem.rpartition("_")[2]
            if path.is_file() and not path.name.startswith(".") and fmt in FORMATS:
                out.append(self._describe(video_id, fmt, path))
        return out

    def file(self, video_id: int, name: str) -> Path:
        self.svc.video_row(video_id)
        path = self.folder(video_id) / name
        if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
            raise not_found(f"video {video_id} has no export {name!r}")
        return path

    def _describe(self, video_id: int, fmt: str, path: Path) -> dict:
        return {"format": fmt, "file": path.name, "path": str(path),
                "url": f"/api/videos/{video_id}/exports/{path.name}",
                "size": path.stat().st_size}

    def _keys(self, media: Media) -> list:
        """Frame names in the PNG layout: source stems for frame folders, else indices."""
        if media.location.is_dir():
            return [Path(n).stem for n in media.frame_names]
        return list(range(media.num_frames))

    # ----------------------------------------------------------------- writers
    def _davis(self, video_id, media, snapshot, objects, stem) -> Path:
        maps = LabelMaps(media, snapshot, self._keys(media))
        target = self.folder(video_id) / f"{stem}_davis.zip"
        with tempfile.TemporaryDirectory(dir=self.svc.data_dir / "tmp") as tmp:
            seq = write_davis_sequence(tmp, stem, maps, palette=_palette(objects))
            with atomic_write(target) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
                for png in sorted(seq.iterdir()):
                    write_entry(zf, f"{stem}/{png.name}", png.read_bytes())
        return target

    def _coco(self, video_id, media, snapshot, objects, stem) -> Path:
        names = {"objects": [{k: o[k] for k in ("id", "name", "color", "label")}
                             for o in objects]}
        cats = coco_categories(list_labels(self.svc.db), objects)
        if media.kind == "video":
            data = self._coco_video(media, snapshot, cats, row_name=stem)
        else:
            data = self._coco_images(media, snapshot, cats)
        target = self.folder(video_id) / f"{stem}_coco.json"
        write_json(target, {**data, "masklet": names})
        return target

    def _coco_video(self, media: Media, snapshot: Snapshot,
                    cats: tuple[list[dict], dict[int, int]], row_name: str) -> dict:
        """COCO video JSON; `cats` = (categories, object id -> category id): one category
        per label (`labels.coco_categories`); annotations carry the object id as
        ``track_id``."""
        h, w = media.height, media.width
        if media.location.is_dir():
            names = list(media.frame_names)
        else:
            names = [f"{row_name}/{i:05d}.jpg" for i in range(media.num_frames)]
        images, annotations = [], []
        for index, name in enumerate(names):
            images.append({"id": index + 1, "video_id": 1, "frame_index": index,
                           "file_name": name, "height": h, "width": w})
            for obj, counts, area in sorted(snapshot.get(index, [])):
                annotations.append(_annotation(
                    counts, h, w, area, id=len(annotations) + 1, image_id=index + 1,
                    video_id=1, category_id=cats[1][obj], track_id=obj))
        return {"videos": [{"id": 1, "name": row_name, "height": h, "width": w,
                            "length": len(images)}],
                "images": images, "annotations": annotations, "categories": cats[0]}

    def _coco_images(self, media: Media, snapshot: Snapshot,
                     cats: tuple[list[dict], dict[int, int]]) -> dict:
        images, annotations = [], []
        for index, name in enumerate(media.frame_names):
            w, h = media.frame_size(index)
            images.append({"id": index + 1, "file_name": name, "height": h, "width": w})
            for obj, counts, area in sorted(snapshot.get(index, [])):
                annotations.append(_annotation(counts, h, w, area, id=len(annotations) + 1,
                                               image_id=index + 1, category_id=cats[1][obj],
                                               track_id=obj))
        return {"images": images, "annotations": annotations, "categories": cats[0]}

    def _yolo(self, video_id, media, snapshot, objects, stem) -> dict:
        """YOLO-seg zip (app/yolo.py); the answer counts the objects left out unlabelled."""
        labels = list_labels(self.svc.db)
        classes = yolo_classes(labels)
        class_of = {o["id"]: classes[o["label"]] for o in objects if o["label"] is not None}
        target = self.folder(video_id) / f"{stem}_yolo.zip"
        left_out = write_yolo(target, stem, media, snapshot, class_of,
                              {classes[lab["id"]]: lab["name"] for lab in labels})
        return {**self._describe(video_id, "yolo", target), "unlabelled_objects": left_out}

    def _sav(self, video_id, media, snapshot, objects, stem) -> Path:
        h, w = media.height, media.width
        ids = sorted({obj for masks in snapshot.values() for obj, _, _ in masks})
        empty = encode_coco_rle(np.zeros((h, w), dtype=bool))
        masklet = []
        for frame in range(media.num_frames):
            have = {obj: {"size": [h, w], "counts": counts}
                    for obj, counts, _ in snapshot.get(frame, [])}
            masklet.append([have.get(obj, empty) for obj in ids])
        data = {"video_id": stem, "video_height": h, "video_width": w, "masklet": masklet,
                "masklet_id": ids, "masklet_num": len(ids),
                "masklet_review": self.svc.review.sav_flags(video_id, media.num_frames, ids)}
        target = self.folder(video_id) / f"{stem}_sav.json"
        write_json(target, data)
        return target

    def _review_csv(self, video_id, media, snapshot, objects, stem) -> Path:
        """Review hints per tracked frame and object (app/review.py)."""
        return self.svc.review.write_csv(self.folder(video_id) / f"{stem}_review-csv.csv",
                                         video_id)

    def _overlay(self, video_id, media, snapshot, objects, stem) -> Path:
        palette = _palette(objects)
        maps = LabelMaps(media, snapshot, list(range(media.num_frames)))
        reader = self.svc.reader(video_id)
        if media.kind == "video":
            target = self.folder(video_id) / f"{stem}_overlay.mp4"
            with OverlayVideoWriter(target, fps=media.fps or 24.0) as writer:
                for idx in range(media.num_frames):
                    writer.write_frame(overlay_masks(reader.rgb(idx), maps.frame(idx),
                                                     palette=palette))
            return target
        target = self.folder(video_id) / f"{stem}_overlay.zip"
        with atomic_write(target) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            for idx, name in enumerate(media.frame_names):
                picture = overlay_masks(reader.rgb(idx), maps.frame(idx), palette=palette)
                png = io.BytesIO()
                Image.fromarray(picture).save(png, format="PNG")
                write_entry(zf, f"{stem}/{Path(name).stem}.png", png.getvalue())
        return target
