"""Model inputs of a video's frames, read and preprocessed ahead in a background thread.

Decoding a frame and resizing it to the model's input is a sizeable share of a small
model's time per frame (about a fifth for masklet_nano on one thread), so a thread does it
for the next frames while the graphs run on the current one. Pillow, PyAV and numpy
release the GIL for that work.
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable

import numpy as np

from masklet_runtime.sources import FrameSource

# How long close() waits for the thread: it may be blocked reading a live stream, and then
# closes the source itself once its read returns.
JOIN_TIMEOUT_S = 5.0
_POLL_S = 0.1

Preprocess = Callable[[np.ndarray], np.ndarray]
# (input, None) for a frame, (None, None) after the last one, (None, error) for a failure.
_Item = tuple[np.ndarray | None, BaseException | None]


class ModelInputs:
    """The inputs [1, 3, S, S] float32 of a source's frames, in order, by `next`.

    With ``depth`` 0 each frame is read when asked for. With ``depth`` > 0 a thread reads
    and preprocesses ahead, holding at most ``depth`` finished inputs plus the one it is
    working on; it is then the source's only reader and closes it when it stops (on
    `close`, or when this object is garbage-collected unclosed). A read error is raised by
    `next` at the frame it concerns, and again by any later call (the source ended there).
    """

    def __init__(self, source: FrameSource, preprocess: Preprocess, depth: int) -> None:
        self._source = source
        self._preprocess = preprocess
        self._last: _Item | None = None  # the end or the error, once it was handed out
        self._closed = False
        self._thread: threading.Thread | None = None
        if depth:
            self._ready: queue.Queue[_Item] = queue.Queue(maxsize=depth)
            self._stop = threading.Event()
            # The thread holds no reference to self, so a session dropped without close()
            # is collected, and the finalizer stops the thread.
            self._thread = threading.Thread(
                target=_read_ahead, args=(source, preprocess, self._ready, self._stop),
                name="masklet-runtime-prefetch", daemon=True)
            self._thread.start()
            weakref.finalize(self, self._stop.set)

    def next(self) -> np.ndarray | None:
        """The next frame's input; None after the last frame (or once closed)."""
        if self._closed:
            return None
        if self._last is not None:
            item = self._last
        elif self._thread is None:
            item = _read_one(self._source, self._preprocess)
        else:
            item = self._ready.get()
        image, error = item
        if image is None:
            self._last = item
        if error is not None:
            raise error
        return image

    @property
    def num_ahead(self) -> int:
        """Inputs finished and waiting (not counting one the thread is working on)."""
        return 0 if self._thread is None else self._ready.qsize()

    def close(self) -> None:
        """Stop reading, drop the inputs read ahead and close the source (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            self._source.close()
            return
        self._stop.set()
        while True:
            try:
                self._ready.get_nowait()
            except queue.Empty:
                break
        self._thread.join(JOIN_TIMEOUT_S)


def _read_one(source: FrameSource, preprocess: Preprocess) -> _Item:
    try:
        frame = source.next_frame()
        return (None if frame is None else preprocess(frame)), None
    except Exception as exc:  # handed to the consumer at this frame
        return None, exc


def _read_ahead(source: FrameSource, preprocess: Preprocess, ready: queue.Queue,
                stop: threading.Event) -> None:
    """The thread: read until the end, an error or ``stop``, then close the source."""
    try:
        while not stop.is_set():
            item = _read_one(source, preprocess)
            if not _put(ready, item, stop) or item[0] is None:
                return
    finally:
        source.close()


def _put(ready: queue.Queue, item: _Item, stop: threading.Event) -> bool:
    """Queue ``item`` once there is room; False if reading was stopped meanwhile."""
    while not stop.is_set():
        try:
            ready.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False
