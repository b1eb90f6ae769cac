"""Visualisations: coloured, semi-transparent masks with contours over RGB frames.

Object k is drawn in colour ``palette[k]`` of the DAVIS palette (ids above 255
wrap around), so overlays match the indexed PNG masks. Where masks overlap the
smaller id is drawn, as in the PNGs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from fractions import Fraction
from types import TracebackType

import av
import numpy as np
import scipy.ndimage
import torch
from PIL import Image

from masklet.export.atomic import PendingFile, atomic_write
from masklet.export.masks import ArrayLike, davis_palette, label_map_from_masks

__all__ = ["overlay_masks", "write_overlay_png", "OverlayVideoWriter"]

OverlayMasks = Mapping[int, ArrayLike] | ArrayLike | Sequence[ArrayLike]
PathLike = str | os.PathLike


def _label_map(masks: OverlayMasks) -> np.ndarray:
    """Any accepted mask input -> int32 label map [H, W]."""
    if isinstance(masks, Mapping):
        return label_map_from_masks(masks, dtype=np.int32)
    if isinstance(masks, (np.ndarray, torch.Tensor)) and masks.ndim == 2:
        return label_map_from_masks(masks, dtype=np.int32)
    # A stack [N, H, W] or a list of masks: number them 1..N.
    return label_map_from_masks(dict(enumerate(masks, start=1)), dtype=np.int32)


def _colors(ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colours [..., 3] for positive object ids [...]: palette entries 1..255, cycling."""
    return palette[(ids - 1) % 255 + 1]


def overlay_masks(
    image: np.ndarray,
    masks: OverlayMasks,
    *,
    alpha: float = 0.5,
    contour_thickness: int = 2,
    palette: np.ndarray | None = None,
) -> np.ndarray:
    """Blend masks onto an image.

    Args:
        image: [H, W, 3] uint8 RGB.
        masks: ``{obj_id: [H, W] mask}``, an integer label map [H, W], or a stack
            [N, H, W] / list of N masks (drawn as ids 1..N). Masks are bool, 0/1 or
            logits (``> 0`` is foreground), numpy or torch.
        alpha: opacity of the mask fill.
        contour_thickness: width in pixels of the opaque outline drawn inside each
            object's border (0 disables it).
        palette: [256, 3] uint8 colours indexed by id (default: DAVIS).
    Returns:
        [H, W, 3] uint8, a new array.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be [H, W, 3] uint8, got {image.dtype} {image.shape}")
    out = image.copy()
    if len(masks) == 0:
        return out
    labels = _label_map(masks)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"masks are {labels.shape}, image is {image.shape[:2]}")
    palette = davis_palette() if palette is None else np.asarray(palette, dtype=np.uint8)

    fg = labels > 0
    ids = labels[fg]
    blended = image[fg] * np.float32(1 - alpha) + _colors(ids, palette) * np.float32(alpha)
    out[fg] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    if contour_thickness > 0:
        edge = fg & _near_other_label(labels, contour_thickness)
        out[edge] = _colors(labels[edge], palette)
    return out


def _near_other_label(labels: np.ndarray, distance: int) -> np.ndarray:
    """[H, W] bool: some pixel within `distance` (Chebyshev) has a different label.

    'nearest' padding keeps the image border from counting as an object border.
    """
    size = 2 * distance + 1
    high = scipy.ndimage.maximum_filter(labels, size=size, mode="nearest")
    low = scipy.ndimage.minimum_filter(labels, size=size, mode="nearest")
    return (high != labels) | (low != labels)


def write_overlay_png(
    path: PathLike,
    image: np.ndarray,
    masks: OverlayMasks,
    *,
    alpha: float = 0.5,
    contour_thickness: int = 2,
) -> None:
    """Write :func:`overlay_masks` of `image` as an RGB PNG, atomically."""
    frame = overlay_masks(image, masks, alpha=alpha, contour_thickness=contour_thickness)
    with atomic_write(path) as f:
        Image.fromarray(frame).save(f, format="PNG")


def _pick_codec(requested: str | None) -> str:
    """`requested`, else H.264 (libx264) when PyAV's FFmpeg has it, else MPEG-4 part 2."""
    candidates = [requested] if requested else ["libx264", "mpeg4"]
    for name in candidates:
        try:
            av.Codec(name, "w")
        except Exception:  # PyAV raises different types across versions for unknown codecs
            continue
        return name
    raise ValueError(f"no usable video encoder among {candidates}")


class OverlayVideoWriter:
    """Encode RGB frames (optionally with mask overlays) to a video file, atomically.

    Frames go to a hidden temporary file next to `path`, renamed onto `path` by
    :meth:`close`. Used as a context manager, an exception in the block (or in
    encoding) deletes the temporary file and leaves `path` untouched.

    Output is yuv420p, so odd frame sizes are padded by one replicated row/column
    to the next even size.

    Args:
        path: output file; the container comes from its extension (.mp4, .mkv, ...).
        fps: frame rate (fractional rates such as 30000/1001 are kept exact).
        codec: encoder name; default libx264, falling back to mpeg4.
        crf: libx264 quality (lower is better, 18 is visually lossless).
        alpha, contour_thickness: overlay style, see :func:`overlay_masks`.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        fps: float = 24.0,
        codec: str | None = None,
        crf: int = 18,
        alpha: float = 0.5,
        contour_thickness: int = 2,
    ) -> None:
        self.codec = _pick_codec(codec)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self.alpha = alpha
        self.contour_thickness = contour_thickness
        self.frames_written = 0
        self._pending = PendingFile(path)
        self.path = self._pending.path
        try:
            faststart = self.path.suffix.lower() in (".mp4", ".mov", ".m4v")
            options = {"movflags": "+faststart"} if faststart else {}
            self._container = av.open(str(self._pending.tmp_path), "w", options=options)
        except BaseException:
            self._pending.discard()
            raise
        self._stream: av.VideoStream | None = None

    def _open_stream(self, height: int, width: int) -> None:
        stream = self._container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if self.codec in ("libx264", "h264"):
            stream.options = {"crf": str(self.crf), "preset": "medium"}
        else:
            # Encoders without a quality mode default to a tiny bit rate; ~0.25 bit/pixel
            # keeps mask edges clean.
            stream.bit_rate = int(width * height * float(self.fps) * 0.25)
        self._stream = stream

    def write(self, image: np.ndarray, masks: OverlayMasks | None = None) -> None:
        """Append one frame: `image` [H, W, 3] uint8 RGB, with `masks` overlaid if given."""
        if masks is not None:
            image = overlay_masks(
                image, masks, alpha=self.alpha, contour_thickness=self.contour_thickness
            )
        self.write_frame(image)

    def write_frame(self, frame: np.ndarray) -> None:
        """Append one ready-made [H, W, 3] uint8 RGB frame."""
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frame must be [H, W, 3] uint8, got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        if self._stream is None:
            self._open_stream(*frame.shape[:2])
        elif (self._stream.height, self._stream.width) != frame.shape[:2]:
            raise ValueError(
                f"frame size {(h, w)} differs from the first frame's "
                f"{(self._stream.height, self._stream.width)} (after even padding)"
            )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        self._container.mux(self._stream.encode(video_frame))
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder, finish the file and move it onto `path`."""
        try:
            if self._stream is None:
                raise ValueError(f"no frames were written to {self.path}")
            self._container.mux(self._stream.encode(None))
            self._container.close()
            self._pending.commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Stop without producing `path`; the temporary file is deleted."""
        try:
            self._container.close()
        except Exception:  # the container may be half-written; it is being thrown away
            pass
        self._pending.discard()

    def __enter__(self) -> OverlayVideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
