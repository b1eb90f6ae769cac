"""DAVIS / YouTube-VOS style video folders.

Layout (the resolution level is optional)::

    ROOT/JPEGImages[/480p]/<sequence>/00000.jpg ...
    ROOT/Annotations[/480p]/<sequence>/00000.png ...

Annotations may be sparse (YouTube-VOS annotates some frames only); an annotation is
matched to the frame with the same file stem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from masklet.data.png import image_size, load_id_mask, load_rgb

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Names that mark a resolution level (DAVIS ships "480p" and "Full-Resolution").
_RESOLUTION_NAME = re.compile(r"^(\d+p|Full-Resolution)$", re.IGNORECASE)
DEFAULT_RESOLUTION = "480p"


def resolve_resolution(folder: Path, resolution: str | None) -> Path:
    """The folder holding the sequence folders, below an optional resolution level.

    With ``resolution`` given, ``folder/resolution`` must exist. Otherwise a resolution
    level is used when ``folder`` has child folders named like one ("480p",
    "Full-Resolution"), preferring "480p" as the DAVIS toolkit does.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    if resolution is not None:
        level = folder / resolution
        if not level.is_dir():
            raise FileNotFoundError(f"resolution folder not found: {level}")
        return level
    levels = sorted(
        p.name for p in folder.iterdir() if p.is_dir() and _RESOLUTION_NAME.match(p.name)
    )
    if not levels:
        return folder
    if DEFAULT_RESOLUTION in levels:
        return folder / DEFAULT_RESOLUTION
    if len(levels) == 1:
        return folder / levels[0]
    raise ValueError(f"{folder} has several resolution levels {levels}; pass resolution=")


def list_sequence_dirs(folder: Path) -> list[Path]:
    """Sorted child folders of ``folder`` (hidden ones skipped); raises if there are none."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ValueError(f"no sequence folders in {folder}")
    return dirs


def list_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """Sorted files of ``folder`` whose suffix (case-insensitive) is in ``suffixes``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    )


@dataclass(frozen=True)
class VOSSequence:
    """One video: its frame images and its (possibly sparse) annotation PNGs.

    ``image_paths`` may be empty when only annotations were found (evaluation-only use).
    """

    name: str
    image_paths: tuple[Path, ...]
    mask_paths: tuple[Path, ...]

    @property
    def frame_names(self) -> tuple[str, ...]:
        return tuple(p.stem for p in self.image_paths)

    @property
    def annotated_names(self) -> tuple[str, ...]:
        return tuple(p.stem for p in self.mask_paths)

    @cached_property
    def annotated_frame_indices(self) -> tuple[int, ...]:
        """Index into ``image_paths`` of each annotation (matched by file stem)."""
        position = {name: i for i, name in enumerate(self.frame_names)}
        missing = [p for p in self.mask_paths if p.stem not in position]
        if missing:
            raise ValueError(f"annotations without a matching frame image: {missing[:3]}")
        return tuple(position[p.stem] for p in self.mask_paths)

    @cached_property
    def size(self) -> tuple[int, int]:
        """(height, width) of the first frame, or of the first mask without frames."""
        first = self.image_paths[0] if self.image_paths else self.mask_paths[0]
        return image_size(first)

    def load_image(self, index: int) -> np.ndarray:
        """Frame ``index`` as [H, W, 3] uint8."""
        path = self.image_paths[index]
        return self._checked(load_rgb(path), path)

    def load_images(self) -> np.ndarray:
        """All frames: [T, H, W, 3] uint8."""
        if not self.image_paths:
            raise ValueError(f"sequence {self.name!r} has no frame images")
        return np.stack([self.load_image(i) for i in range(len(self.image_paths))])

    def load_mask(self, index: int) -> np.ndarray:
        """Annotation ``index`` (of ``mask_paths``) as ids [H, W] int32."""
        path = self.mask_paths[index]
        return self._checked(load_id_mask(path), path)

    def load_masks(self) -> np.ndarray:
        """All annotations: ids [A, H, W] int32, A = len(mask_paths)."""
        if not self.mask_paths:
            raise ValueError(f"sequence {self.name!r} has no annotations")
        return np.stack([self.load_mask(i) for i in range(len(self.mask_paths))])

    def object_ids(self) -> tuple[int, ...]:
        """Sorted non-zero ids found in any annotation."""
        found: set[int] = set()
        for i in range(len(self.mask_paths)):
            found.update(np.unique(self.load_mask(i)).tolist())
        found.discard(0)
        return tuple(sorted(found))

    def _checked(self, array: np.ndarray, path: Path) -> np.ndarray:
        if array.shape[:2] != self.size:
            raise ValueError(
                f"{path} has size {array.shape[:2]} (H, W) but sequence {self.name!r} "
                f"is {self.size}"
            )
        return array


class VOSDataset:
    """A DAVIS / YouTube-VOS style dataset folder.

    Args:
        root: folder holding ``image_folder`` and ``annotation_folder``.
        resolution: resolution level ("480p", "Full-Resolution"); auto-detected if None.
        image_folder, annotation_folder: names of the two top-level folders.
        require_annotations: raise when a sequence has no annotation PNGs.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        resolution: str | None = None,
        image_folder: str = "JPEGImages",
        annotation_folder: str = "Annotations",
        require_annotations: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root}")
        self.image_root = resolve_resolution(self.root / image_folder, resolution)
        annotation_top = self.root / annotation_folder
        self.annotation_root = (
            resolve_resolution(annotation_top, resolution) if annotation_top.is_dir() else None
        )
        if self.annotation_root is None and require_annotations:
            raise FileNotFoundError(f"annotation folder not found: {annotation_top}")
        self.require_annotations = require_annotations
        self._sequences = {p.name: self._scan(p) for p in list_sequence_dirs(self.image_root)}

    def _scan(self, image_dir: Path) -> VOSSequence:
        images = list_files(image_dir, IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"no frame images in {image_dir}")
        masks: list[Path] = []
        if self.annotation_root is not None:
            mask_dir = self.annotation_root / image_dir.name
            masks = list_files(mask_dir, (".png",)) if mask_dir.is_dir() else []
        if not masks and self.require_annotations:
            raise ValueError(
                f"no annotation PNGs for sequence {image_dir.name!r} in {self.annotation_root}"
            )
        return VOSSequence(name=image_dir.name, image_paths=tuple(images), mask_paths=tuple(masks))

    @property
    def sequence_names(self) -> tuple[str, ...]:
        return tuple(self._sequences)

    def __len__(self) -> int:
        return len(self._sequences)

    def __iter__(self) -> Iterator[VOSSequence]:
        return iter(self._sequences.values())

    def __getitem__(self, key: str | int) -> VOSSequence:
        if isinstance(key, int):
            return list(self._sequences.values())[key]
        if key not in self._sequences:
            raise KeyError(f"no sequence {key!r} in {self.image_root}")
        return self._sequences[key]
