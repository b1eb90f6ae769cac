"""Frames decoded lazily from a video file (MP4, MOV, MKV, WebM, AVI, ...) with PyAV."""

from __future__ import annotations

import io
import os
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator

import av
import numpy as np

from masklet.io.base import FrameSource, VideoReadError
from masklet.io.orientation import DisplayTransform, display_transform


class VideoFileSource(FrameSource):
    """A video file (a path, or its bytes) decoded on demand, never held whole in memory.

    Frame count: opening the file demuxes every video packet once (reading, not
    decoding: milliseconds for minutes of video). Each packet that carries a
    timestamp is one frame, which holds for the codecs found in practice (H.264,
    HEVC, VP8/9, AV1, MPEG-4); packets the container marks as discarded (MP4 edit
    lists) are not frames. If the container declares more frames than could be
    demuxed, the file is truncated and opening it raises VideoReadError.

    Access: a request ahead of the decoder's position, within the keyframe
    interval it is decoding, decodes forward; any other request seeks to the
    keyframe at or before the frame and decodes from there. The `cache_size`
    most recent frames decoded up to a target are kept, so stepping backwards
    (reverse propagation) decodes each keyframe interval once per `cache_size`
    frames instead of once per frame. Streams whose packets have no timestamps
    fall back to decoding from the start.

    Frames are the decoder's pixels converted to RGB by FFmpeg (`rgb24`), shown upright:
    turned as the file's display matrix says (a phone's portrait video is stored lying on
    its side), as players and FFmpeg's frame extraction do, so `width` and `height` are
    those of the picture a player shows. ``upright=False`` reads the stored pixels.
    """

    def __init__(self, video: str | os.PathLike[str] | bytes, *, cache_size: int = 8,
                 upright: bool = True) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {cache_size}")
        is_bytes = isinstance(video, (bytes, bytearray))
        super().__init__(name="<video bytes>" if is_bytes else os.fspath(video))
        if not is_bytes and not os.path.isfile(self.name):
            raise VideoReadError(f"{self.name}: no such file")
        self._video = video
        self._cache_size = cache_size
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._closed = False
        # Read from the first decoded frame, then applied to every frame: one frame size.
        self._transform: DisplayTransform | None = None if upright else DisplayTransform()
        self._container = self._open_container()
        try:
            self._stream = self._first_video_stream()
            self._index_packets()
            # After the index pass the demuxer sits at the end of the file.
            self._decoder: Iterator[av.VideoFrame] | None = None
            self._next_index: int | None = None
            self._decoded_count = 0
            first = self._read(0)
        except BaseException:
            self._container.close()
            raise
        self.height, self.width = first.shape[:2]

    @property
    def num_frames(self) -> int:
        return self._num_frames

    @property
    def display_transform(self) -> DisplayTransform:
        """How the stored pixels are turned to be read (identity with ``upright=False``)."""
        assert self._transform is not None  # set by decoding frame 0 when opened
        return self._transform

    def close(self) -> None:
        self._closed = True
        self._decoder = None
        self._cache.clear()
        self._container.close()

    # -- opening and indexing ------------------------------------------------------------

    def _open_container(self) -> av.container.InputContainer:
        is_bytes = isinstance(self._video, (bytes, bytearray))
        target = io.BytesIO(self._video) if is_bytes else self.name
        try:
            return av.open(target, mode="r")
        except (av.error.FFmpegError, OSError) as err:
            raise VideoReadError(f"{self.name}: not a readable video file ({err})") from err

    def _first_video_stream(self) -> av.video.stream.VideoStream:
        if not self._container.streams.video:
            raise VideoReadError(f"{self.name}: the file has no video stream")
        stream = self._container.streams.video[0]
        # Frame-level threading roughly doubles decode speed and is bit-exact.
        stream.thread_type = "AUTO"
        return stream

    def _index_packets(self) -> None:
        """Set `_num_frames`, and display-order timestamps and keyframes when available."""
        stamps: list[int] = []
        key_stamps: list[int] = []
        unstamped = demuxed = 0
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # the end-of-stream flush packet
                    continue
                demuxed += 1
                if packet.is_discard:
                    continue
                if packet.pts is None:
                    unstamped += 1
                    continue
                stamps.append(packet.pts)
                if packet.is_keyframe:
                    key_stamps.append(packet.pts)
        except av.error.FFmpegError as err:
            raise VideoReadError(f"{self.name}: the file is corrupt ({err})") from err
        self._num_frames = len(stamps) + unstamped
        if self._num_frames == 0:
            raise VideoReadError(f"{self.name}: the video stream has no frames")
        declared = self._stream.frames
        if declared and demuxed < declared:
            raise VideoReadError(
                f"{self.name}: the file is truncated (the container declares {declared} "
                f"frames but only {demuxed} could be read)"
            )
        if unstamped or len(set(stamps)) != len(stamps):
            self._stamps: list[int] | None = None
            self._keyframes: list[int] = [0]
            return
        stamps.sort()
        self._stamps = stamps
        self._index_of_stamp = {stamp: idx for idx, stamp in enumerate(stamps)}
        self._keyframes = sorted({0} | {self._index_of_stamp[s] for s in key_stamps})

    # -- decoding ------------------------------------------------------------------------

    def _read(self, idx: int) -> np.ndarray:
        if self._closed:
            raise VideoReadError(f"{self.name}: the source is closed")
        cached = self._cache.get(idx)
        if cached is not None:
            self._cache.move_to_end(idx)
            return cached
        start = self._keyframe_at_or_before(idx)
        if self._next_index is None or not start <= self._next_index <= idx:
            self._restart(start)
        frame = self._decode_until(idx)
        if frame is None and start > 0:
            # The seek landed past the frame (unusual keyframe layout): decode from the start.
            self._restart(0)
            frame = self._decode_until(idx)
        if frame is None:
            raise VideoReadError(f"{self.name}: frame {idx} could not be decoded")
        return frame

    def _keyframe_at_or_before(self, idx: int) -> int:
        return self._keyframes[bisect_right(self._keyframes, idx) - 1]

    def _restart(self, start: int) -> None:
        """Position the decoder so that its next frames begin at or before frame `start`."""
        self._decoder = None
        self._next_index = None
        try:
            if self._stamps is None:
                # Without timestamps frames are counted, so decoding must begin at frame 0.
                self._container.close()
                self._container = self._open_container()
                self._stream = self._first_video_stream()
                start = 0
            else:
                self._container.seek(self._stamps[start], stream=self._stream, backward=True)
        except av.error.FFmpegError as err:
            raise VideoReadError(f"{self.name}: seeking to frame {start} failed ({err})") from err
        self._decoder = self._container.decode(self._stream)
        self._next_index = start
        self._decoded_count = 0

    def _decode_until(self, idx: int) -> np.ndarray | None:
        """Decode forward to frame `idx`; None if the decoder passes it or the stream ends."""
        assert self._decoder is not None
        try:
            for frame in self._decoder:
                index = self._frame_index(frame)
                if index is None:
                    continue
                self._next_index = index + 1
                # Only frames close to the target can be served from the cache later.
                if idx - index < self._cache_size:
                    if self._transform is None:
                        self._transform = display_transform(frame)
                    rgb = self._transform.apply(frame.to_ndarray(format="rgb24"))
                    self._remember(index, rgb)
                    if index >= idx:
                        return rgb if index == idx else None
        except av.error.FFmpegError as err:
            self._decoder = self._next_index = None
            raise VideoReadError(f"{self.name}: decoding failed near frame {idx} ({err})") from err
        self._decoder = self._next_index = None
        return None

    def _frame_index(self, frame: av.VideoFrame) -> int | None:
        if self._stamps is None:
            self._decoded_count += 1
            return self._decoded_count - 1
        # A frame whose timestamp has no packet is not one of the indexed frames.
        return self._index_of_stamp.get(frame.pts)

    def _remember(self, index: int, rgb: np.ndarray) -> None:
        rgb.flags.writeable = False  # callers share the cached array
        self._cache[index] = rgb
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
