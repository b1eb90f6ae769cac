"""What the app can open: videos, frame folders and images, checked by really decoding them.

Paths given by the user must resolve (symlinks followed) inside one of the configured
roots; uploads are probed from their bytes, never from the name the browser sent.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from masklet.app.errors import AppError
from masklet.export import atomic_write
from masklet.io import FrameSource, JpegFolderSource, VideoFileSource, VideoReadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
JPEG_SUFFIXES = (".jpg", ".jpeg")
# The most pixels one frame may have: Pillow's own refusal threshold (a decompression
# bomb), also for video frames, which PyAV decodes without one: a small compressed file
# can hold a frame of gigabytes. At the limit a frame is about 0.5 GB as RGB.
MAX_FRAME_PIXELS = 178_956_970
EXIF_ORIENTATION = 0x0112  # 1: as stored; 2..8: viewers turn and / or mirror the photo
_SWAPS_AXES = (5, 6, 7, 8)  # the orientations that turn a photo a quarter
# Container name (PyAV's format.name) -> the extension an upload is stored under, so that
# reopening it never lets FFmpeg pick a demuxer from a misleading name.
_CONTAINER_SUFFIX = {"mov,mp4,m4a,3gp,3g2,mj2": ".mp4", "matroska,webm": ".mkv", "avi": ".avi"}


@dataclass
class Media:
    """Everything the database records about an opened video or image set."""

    kind: str  # "video" | "images"
    location: Path  # a file, or the folder holding the frames
    num_frames: int
    width: int
    height: int
    fps: float | None
    frame_names: list[str]
    frame_sizes: list[list[int]] | None  # [[w, h], ...] for kind "images"
    # Frames read as viewers show them: a video file turned by its display matrix, photos
    # by their EXIF orientation (not frame folders: FFmpeg extracted them upright). False
    # for what was opened before masklet turned them, so its masks keep their grid.
    upright: bool = False

    def frame_path(self, idx: int) -> Path:
        return self.location / self.frame_names[idx] if self.location.is_dir() else self.location

    def frame_size(self, idx: int) -> tuple[int, int]:
        """(width, height) of one frame (image sets may mix sizes)."""
        if self.frame_sizes is not None:
            w, h = self.frame_sizes[idx]
            return w, h
        return self.width, self.height


class PathPolicy:
    """Which paths may be opened: those that resolve inside one of `roots`."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = [Path(r).resolve(strict=True) for r in roots]

    def inside(self, real: Path) -> bool:
        return any(real == root or root in real.parents for root in self.roots)

    def resolve(self, raw: str) -> Path:
        """The real path of `raw`: 403 outside the roots, 404 missing.

        An absolute `raw` must lie inside a root. A relative one is looked up in every
        root, in the order they were given: the first root that holds it wins (a name
        present in two roots opens the first root's, as a search path does); 404 only
        when no root holds it.
        """
        if not raw or "\x00" in raw:
            raise AppError(400, "give a path")
        path = Path(raw).expanduser()
        if ".." in path.parts:
            raise AppError(403, f"{raw}: '..' is not allowed in paths")
        if not self.roots:
            raise AppError(403, "no folder may be opened by path: start the server with --roots")
        candidates = [path] if path.is_absolute() else [root / path for root in self.roots]
        inside = [real for real in (c.resolve(strict=False) for c in candidates)
                  if self.inside(real)]
        if not inside:
            raise AppError(403, f"{raw} is outside the folders this server may open")
        for real in inside:
            if real.exists():
                return real
        raise AppError(404, f"{raw}: no such file or folder")


def too_large(name: str, size: tuple[int, int] | None = None) -> AppError:
    """413 for a frame of more pixels than MAX_FRAME_PIXELS (``size``: (w, h) when known)."""
    what = f"{size[0]}x{size[1]} is" if size else "the image has"
    return AppError(413, f"{name}: {what} more pixels than the app reads in one frame (at "
                         f"most {MAX_FRAME_PIXELS // 1_000_000} million)")


def _check_size(name: str, width: int, height: int) -> None:
    if width * height > MAX_FRAME_PIXELS:
        raise too_large(name, (width, height))


@contextlib.contextmanager
def _opened(path: Path, name: str) -> Iterator[Image.Image]:
    """`path` opened with Pillow, its size checked before any pixel is decoded: 413
    (naming ``name``) for a frame of too many pixels. Pillow's other errors pass through."""
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        raise too_large(name) from None
    with image:
        _check_size(name, *image.size)
        yield image


def _image_size(path: Path, name: str, decode: bool) -> tuple[int, int] | None:
    """(width, height) of `path` as viewers show it (EXIF orientation applied) if it is an
    image (fully decoded when ``decode``), else None; 413 (named ``name``) for one of too
    many pixels, before it is decoded."""
    try:
        with _opened(path, name) as image:
            if decode:
                image.load()
            w, h = image.size
            turned = image.getexif().get(EXIF_ORIENTATION, 1) in _SWAPS_AXES
            return (h, w) if turned else (w, h)
    except (OSError, ValueError, SyntaxError):
        return None


def _fps(path: Path) -> float | None:
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else None
    except (av.error.FFmpegError, OSError, IndexError):
        return None


def _container_suffix(path: Path) -> str:
    with av.open(str(path)) as container:
        return _CONTAINER_SUFFIX.get(container.format.name, ".video")


def probe_video_file(path: Path) -> Media:
    """A video file that PyAV can index and decode (its first frame is decoded, after its
    size, read from the header, was checked)."""
    try:
        with av.open(str(path)) as container:
            codec = container.streams.video[0].codec_context
            _check_size(path.name, codec.width, codec.height)
    except (av.error.FFmpegError, OSError, IndexError):
        pass  # not a video: VideoFileSource says so
    try:
        source = VideoFileSource(path)
    except (VideoReadError, av.error.FFmpegError, OSError) as err:
        raise AppError(415, f"not a readable video or image: {err}") from None
    with source:
        num, width, height = source.num_frames, source.width, source.height
    _check_size(path.name, width, height)  # for containers whose header gave no size
    return Media("video", path, num, width, height, _fps(path), [path.name], None, True)


def probe_image_file(path: Path, label: str | None = None) -> Media | None:
    """An image file (None if it is not one); 413 for one of too many pixels, named
    ``label`` (default: its file name)."""
    size = _image_size(path, label or path.name, decode=True)
    if size is None:
        return None
    return Media("images", path, 1, size[0], size[1], None, [path.name], [list(size)], True)


def _scrubbed(message: str, path: Path, label: str) -> str:
    """`message` with the server's own path of a file (and its bare name) replaced by
    `label`, the name the user knows the file by."""
    for text in (str(path.resolve()), str(path), path.name):
        message = message.replace(f"'{text}'", label).replace(text, label)
    return message


def probe_upload(path: Path, label: str = "the upload") -> tuple[Media, str]:
    """Decode an uploaded file: (its media, the suffix to store it under). 415 if neither.

    `path` is the server's temporary copy; error messages name the file as `label` (the
    user's file name), never by the server's path.
    """
    image = probe_image_file(path, label)
    if image is not None:
        with Image.open(path) as im:
            suffix = "." + (im.format or "img").lower().replace("jpeg", "jpg")
        return image, suffix
    try:
        media = probe_video_file(path)
        suffix = _container_suffix(path)
    except AppError as err:
        raise AppError(err.status, _scrubbed(err.detail, path, label)) from None
    except (av.error.FFmpegError, OSError, IndexError) as err:
        reason = _scrubbed(str(err), path, label)
        raise AppError(415, f"{label}: not a readable video or image ({reason})") from None
    return media, suffix


def _natural_key(path: Path) -> tuple[list[int | str], str]:
    """Numbers in names compare as numbers ("9.jpg" before "10.jpg"), like masklet.io."""
    parts = re.split(r"(\d+)", path.stem)
    return [int(p) if p.isdigit() else p.lower() for p in parts], path.name


def _image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_natural_key)


def probe_path(path: Path, kind: str | None, policy: PathPolicy) -> Media:
    """Open a resolved path as `kind` (default: images for an image file, else video)."""
    if path.is_file():
        image = probe_image_file(path) if kind != "video" else None
        if image is not None:
            return image
        if kind == "images":
            raise AppError(415, f"{path.name} is not a readable image")
        return probe_video_file(path)
    if kind == "images":
        return _probe_image_folder(path, policy)
    try:
        source = JpegFolderSource(path)
    except VideoReadError as err:
        raise AppError(415, str(err)) from None
    _check_size(source.paths[0].name, source.width, source.height)
    _check_files_inside(source.paths, policy)
    names = [p.name for p in source.paths]
    return Media("video", path, len(names), source.width, source.height, None, names, None)


def _check_files_inside(files: list[Path], policy: PathPolicy) -> None:
    for file in files:
        if not policy.inside(file.resolve()):
            raise AppError(403, f"{file.name} links outside the folders this server may open")


def _probe_image_folder(folder: Path, policy: PathPolicy) -> Media:
    files = _image_files(folder)
    if not files:
        raise AppError(415, f"{folder}: the folder has no images")
    _check_files_inside(files, policy)
    sizes = []
    for file in files:
        size = _image_size(file, file.name, decode=False)
        if size is None:
            raise AppError(415, f"{file.name} is not a readable image")
        sizes.append(list(size))
    w, h = sizes[0]
    return Media("images", folder, len(files), w, h, None, [f.name for f in files], sizes,
                 True)


def count_frames(folder: Path) -> int:
    """How many frames `masklet` would read from a folder (0 if none)."""
    try:
        return len(_image_files(folder))
    except OSError:
        return 0


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _oriented(path: Path, name: str) -> bool:
    """True when an image's EXIF orientation asks viewers to turn or mirror it; 413 for one
    of too many pixels (a frame file replaced after the video was opened)."""
    try:
        with _opened(path, name) as image:
            return image.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1)
    except (OSError, ValueError, SyntaxError):
        return False  # unreadable: decoding it says why


class FrameReader:
    """RGB frames and page-ready JPEG bytes of one video, safe to call from many threads.

    JPEG frame files are served as they are, unless their EXIF orientation asks viewers
    to turn them: browsers do, so the page would show them on another pixel grid than the
    one the model and the masks use whenever that grid is the stored one (frame folders,
    media opened before photos were turned). Those and other frames are decoded once (as
    `rgb` reads them) and their JPEG kept in `cache_dir`. Every file is checked when it
    is read, not only when the video was opened: a frame replaced later by a link leading
    out of the allowed folders (`allowed` says which real paths are) is refused with 403.
    """

    def __init__(self, media: Media, cache_dir: Path,
                 allowed: Callable[[Path], bool] | None = None) -> None:
        self.media = media
        self.cache_dir = cache_dir
        self.allowed = allowed
        self._lock = threading.Lock()
        self._video: VideoFileSource | None = None
        self._turned: dict[int, bool] = {}  # frame -> its JPEG file has an orientation

    def checked(self, path: Path) -> Path:
        """The real path of `path` (links followed), refused (403) outside `allowed`."""
        real = path.resolve(strict=False)
        if self.allowed is not None and not self.allowed(real):
            # A link made after opening, or a server restarted with other --roots.
            raise AppError(403, f"{path.name} leads outside the folders this server may "
                                "open (--roots)")
        if not real.is_file():
            raise AppError(410, f"the video's frames cannot be read any more: {path.name} "
                                "is gone")
        return real

    def rgb(self, idx: int) -> np.ndarray:
        if self.media.kind == "video" and self.media.location.is_file():
            with self._lock:
                if self._video is None:
                    self._video = VideoFileSource(self.checked(self.media.location),
                                                  upright=self.media.upright)
                return self._video.get(idx).copy()
        path = self.media.frame_path(idx)
        real = self.checked(path)
        try:
            with _opened(real, path.name) as image:  # checked again: replaced since?
                if self.media.upright and self.media.kind == "images":
                    return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as err:
            raise AppError(415, f"{path.name}: cannot read the image ({err})") from None

    def jpeg(self, idx: int) -> bytes:
        path = self.media.frame_path(idx)
        is_file = self.media.location.is_dir() or self.media.kind == "images"
        if is_file and path.suffix.lower() in JPEG_SUFFIXES:
            real = self.checked(path)
            if idx not in self._turned:
                self._turned[idx] = _oriented(real, path.name)
            if not self._turned[idx]:
                return real.read_bytes()
        cached = self.cache_dir / f"{idx:06d}.jpg"
        if cached.is_file():
            return cached.read_bytes()
        data = encode_jpeg(self.rgb(idx))
        with atomic_write(cached) as f:
            f.write(data)
        return data

    def close(self) -> None:
        with self._lock:
            if self._video is not None:
                self._video.close()
                self._video = None


class ReaderSource(FrameSource):
    """The frames of a `FrameReader` as a `FrameSource`, for the video predictor: the model
    reads the frames the video was opened with, through the same per-read link check."""

    def __init__(self, reader: FrameReader) -> None:
        super().__init__(name=reader.media.location.name)
        self.reader = reader
        self.width, self.height = reader.media.width, reader.media.height

    @property
    def num_frames(self) -> int:
        return self.reader.media.num_frames

    def _read(self, idx: int) -> np.ndarray:
        return self.reader.rgb(idx)
