"""SA-V training annotations: one JSON per video holding COCO-RLE masklets.

The JSON (``sav_XXXXXX_manual.json`` / ``_auto.json``) holds, among other keys::

    "video_id": str, "video_height": float, "video_width": float, "video_frame_count": float,
    "masklet": [[RLE per object] per annotated frame],
    "masklet_id": [int per object], "masklet_first_appeared_frame": [int per object], ...

Videos are 24 fps and annotated at 6 fps, so annotated frame ``k`` is video frame
``k * annotation_stride`` (stride 4). Masklets of one video may overlap (a person and
their hand), so masks are returned per object rather than as a single id map.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masklet.data.rle import decode_rle, rle_area, rle_size

SAV_ANNOTATION_STRIDE = 4
_REQUIRED_KEYS = ("video_height", "video_width", "masklet", "masklet_id")


@dataclass(frozen=True)
class SavMasklets:
    """The masklets of one SA-V video.

    Attributes:
        video_id: e.g. "sav_000001".
        height, width: video frame size.
        num_video_frames: frames in the (24 fps) video, or None when not recorded.
        masklet_ids: one id per object.
        rles: [K][N] RLE dicts (None where a frame has no annotation for the object),
            K annotated frames, N objects.
        annotation_stride: video frames between two annotated frames.
        source: the JSON path, used in error messages.
    """

    video_id: str
    height: int
    width: int
    num_video_frames: int | None
    masklet_ids: tuple[int, ...]
    rles: tuple[tuple[dict[str, Any] | None, ...], ...]
    annotation_stride: int = SAV_ANNOTATION_STRIDE
    source: str = ""

    @property
    def num_objects(self) -> int:
        return len(self.masklet_ids)

    @property
    def num_annotated_frames(self) -> int:
        return len(self.rles)

    @property
    def video_frame_indices(self) -> tuple[int, ...]:
        """Video frame index of each annotated frame."""
        return tuple(k * self.annotation_stride for k in range(self.num_annotated_frames))

    def decode_frame(self, k: int) -> np.ndarray:
        """Masks of every object on annotated frame ``k``: [N, H, W] bool."""
        masks = np.zeros((self.num_objects, self.height, self.width), dtype=bool)
        for i, rle in enumerate(self.rles[k]):
            masks[i] = decode_rle(rle, (self.height, self.width), where=self._where(k, i))
        return masks

    def decode_object(self, i: int) -> np.ndarray:
        """Object ``i`` (position in ``masklet_ids``) on every annotated frame: [K, H, W] bool."""
        return np.stack(
            [
                decode_rle(frame[i], (self.height, self.width), where=self._where(k, i))
                for k, frame in enumerate(self.rles)
            ]
        )

    def areas(self) -> np.ndarray:
        """Foreground pixel counts [K, N] int64, computed without decoding."""
        return np.array(
            [
                [rle_area(rle, where=self._where(k, i)) for i, rle in enumerate(frame)]
                for k, frame in enumerate(self.rles)
            ],
            dtype=np.int64,
        ).reshape(self.num_annotated_frames, self.num_objects)

    def visibility(self) -> np.ndarray:
        """Whether each object is visible on each annotated frame: [K, N] bool."""
        return self.areas() > 0

    def _where(self, k: int, i: int) -> str:
        return f"{self.source or self.video_id}: annotated frame {k}, object {i}"


def _validate_frames(masklet: Any, num_objects: int, size: tuple[int, int], where: str) -> None:
    if not isinstance(masklet, list):
        raise ValueError(
            f"{where}: 'masklet' must be a list over frames, got {type(masklet).__name__}"
        )
    for k, frame in enumerate(masklet):
        if not isinstance(frame, list) or len(frame) != num_objects:
            found = len(frame) if isinstance(frame, list) else type(frame).__name__
            raise ValueError(
                f"{where}: annotated frame {k} has {found} masks, expected {num_objects}"
            )
        for i, rle in enumerate(frame):
            if rle is not None and rle_size(rle) != size:
                raise ValueError(
                    f"{where}: annotated frame {k}, object {i} has RLE size {rle_size(rle)}, "
                    f"video is {size} (H, W)"
                )


def parse_sav(
    data: dict[str, Any], *, source: str = "", annotation_stride: int = SAV_ANNOTATION_STRIDE
) -> SavMasklets:
    """Build :class:`SavMasklets` from an already-loaded SA-V JSON dict."""
    where = source or "SA-V annotation"
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}")
    size = (int(data["video_height"]), int(data["video_width"]))
    masklet_ids = tuple(int(v) for v in data["masklet_id"])
    _validate_frames(data["masklet"], len(masklet_ids), size, where)
    frame_count = data.get("video_frame_count")
    return SavMasklets(
        video_id=str(data.get("video_id", Path(source).stem if source else "")),
        height=size[0],
        width=size[1],
        num_video_frames=None if frame_count is None else int(frame_count),
        masklet_ids=masklet_ids,
        rles=tuple(tuple(frame) for frame in data["masklet"]),
        annotation_stride=annotation_stride,
        source=source,
    )


def load_sav(
    path: str | os.PathLike, *, annotation_stride: int = SAV_ANNOTATION_STRIDE
) -> SavMasklets:
    """Read one SA-V annotation JSON file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SA-V annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot parse SA-V JSON {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: SA-V JSON must be an object, got {type(data).__name__}")
    return parse_sav(data, source=str(path), annotation_stride=annotation_stride)
