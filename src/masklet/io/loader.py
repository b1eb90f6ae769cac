"""Model inputs for every frame of a video, computed lazily with bounded memory.

`PreprocessedFrames` turns a FrameSource into [3, S, S] float32 tensors on demand,
keeps the few most recent ones in an LRU cache and can compute the next ones in a
background thread. It never holds more than `cache_size + prefetch` tensors.
"""

from __future__ import annotations

import functools
import threading
import warnings
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from itertools import count
from types import TracebackType

import numpy as np
import torch
from torch import Tensor

from masklet.io.base import FrameIndexError, FrameSource
from masklet.io.preprocess import preprocess_video_frame

Preprocess = Callable[[np.ndarray, int], Tensor]

# How long close() waits for the prefetch thread, which may be blocked reading a live stream.
_JOIN_TIMEOUT_S = 5.0


def _load_frame(
    source: FrameSource, preprocess: Preprocess, image_size: int, device: torch.device, idx: int
) -> Tensor:
    return preprocess(source.get(idx), image_size).to(device)


class _Prefetcher:
    """A thread that computes frames ahead of the consumer, in the consumer's direction.

    The thread follows a plan (next index, step); a request the plan does not cover
    starts a new plan there. Finished frames wait in `_ready` (at most `depth`
    frames, counting the one being computed). A failure is delivered in place of
    the frame it concerns, when the consumer asks for that frame. Once started,
    the thread is the only reader of the source, and it closes the source on exit.
    """

    def __init__(
        self,
        load: Callable[[int], Tensor],
        *,
        depth: int,
        num_frames: Callable[[], int | None],
        on_exit: Callable[[], None],
    ) -> None:
        self._load = load
        self._depth = depth
        self._num_frames = num_frames
        self._on_exit = on_exit
        self._cond = threading.Condition()
        self._ready: deque[tuple[int, Tensor | None, Exception | None]] = deque()
        self._next, self._step = 0, 1
        # (generation, index) of the frame being computed; None when idle.
        self._in_flight: tuple[int, int] | None = None
        self._wanted: int | None = None
        self._plan_failed = False
        self._generation = 0
        self._stopping = False
        self._fatal: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="masklet-prefetch", daemon=True)
        self._thread.start()

    @property
    def num_held(self) -> int:
        with self._cond:
            return len(self._ready) + (self._in_flight is not None)

    def take(self, idx: int, step: int) -> Tensor:
        """Frame `idx`, waiting for the thread; re-raises an error it hit on that frame."""
        with self._cond:
            if not self._plan_covers(idx):
                self._generation += 1
                self._ready.clear()
                self._next, self._step, self._plan_failed = idx, step, False
                self._cond.notify_all()
            self._wanted = idx
            self._cond.notify_all()
            try:
                while True:
                    while self._ready and self._ready[0][0] != idx:
                        self._ready.popleft()
                    if self._ready:
                        _, tensor, error = self._ready.popleft()
                        self._cond.notify_all()
                        break
                    if self._stopping:
                        raise RuntimeError("the frame prefetch thread has stopped") from self._fatal
                    self._cond.wait()
            finally:
                self._wanted = None
        if error is not None:
            raise error
        assert tensor is not None
        return tensor

    def _plan_covers(self, idx: int) -> bool:
        return (
            any(item[0] == idx for item in self._ready)
            or self._in_flight == (self._generation, idx)
            or (idx == self._next and not self._plan_failed)
        )

    def _has_work(self) -> bool:
        if self._plan_failed:
            return False
        if self._next == self._wanted:
            # The consumer waits for this frame: try it even if it turns out to be an error.
            return True
        total = self._num_frames()
        in_range = self._next >= 0 and (total is None or self._next < total)
        return in_range and len(self._ready) < self._depth

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._stopping and not self._has_work():
                        self._cond.wait()
                    if self._stopping:
                        return
                    generation, idx = self._generation, self._next
                    self._in_flight = (generation, idx)
                    self._next += self._step
                self._produce(generation, idx)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, never lost
            self._fatal = err
        finally:
            with self._cond:
                self._stopping = True
                self._in_flight = None
                self._ready.clear()
                self._cond.notify_all()
            self._on_exit()

    def _produce(self, generation: int, idx: int) -> None:
        tensor: Tensor | None = None
        error: Exception | None = None
        try:
            tensor = self._load(idx)
        except Exception as err:  # noqa: BLE001 - re-raised in the consumer's thread
            error = err
        with self._cond:
            self._in_flight = None
            if generation == self._generation and not self._stopping:
                self._ready.append((idx, tensor, error))
                self._plan_failed = error is not None
            self._cond.notify_all()

    def stop(self) -> None:
        """Stop the thread (idempotent); it finishes the frame it is computing first."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if threading.current_thread() is self._thread:
            return
        self._thread.join(_JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            warnings.warn(
                "the frame prefetch thread is still waiting for the source; it will close "
                "the source and exit once that read returns",
                RuntimeWarning,
                stacklevel=3,
            )


def _shut_down(prefetcher: _Prefetcher | None, source: FrameSource) -> None:
    if prefetcher is None:
        source.close()
    else:
        prefetcher.stop()  # the thread closes the source itself


class PreprocessedFrames:
    """Lazily preprocessed model inputs [3, S, S] float32 for the frames of a video.

    source: the frames; this object takes ownership and closes it.
    image_size: S, the model's square input size.
    device: where the returned (and cached) tensors live.
    preprocess: frame [H, W, 3] uint8, S -> [3, S, S] float32; the default matches
      the official video predictor.
    cache_size: how many recent tensors to keep (None keeps every frame, as the
      official loader does; memory then grows with the video).
    prefetch: how many upcoming frames a background thread computes ahead (0: none).
      It follows the direction of the last two requests, so reverse propagation
      is prefetched too.
    """

    def __init__(
        self,
        source: FrameSource,
        *,
        image_size: int,
        device: torch.device | str = "cpu",
        preprocess: Preprocess = preprocess_video_frame,
        cache_size: int | None = 4,
        prefetch: int = 0,
    ) -> None:
        if cache_size is not None and cache_size < 1:
            raise ValueError(f"cache_size must be >= 1 or None, got {cache_size}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        self.source = source
        self.image_size = image_size
        self.device = torch.device(device)
        self._cache_size = cache_size
        self._cache: OrderedDict[int, Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._last_request: int | None = None
        # A free function, not a bound method, so the thread does not keep `self` alive.
        self._load = functools.partial(_load_frame, source, preprocess, image_size, self.device)
        self._prefetcher = (
            _Prefetcher(
                self._load,
                depth=prefetch,
                num_frames=lambda: source.num_frames,
                on_exit=source.close,
            )
            if prefetch > 0
            else None
        )
        self._finalizer = weakref.finalize(self, _shut_down, self._prefetcher, source)

    @property
    def video_height(self) -> int:
        return self.source.height

    @property
    def video_width(self) -> int:
        return self.source.width

    @property
    def num_frames(self) -> int | None:
        return self.source.num_frames

    @property
    def num_held_frames(self) -> int:
        """Tensors currently held (cache, prefetched, being prefetched):
        <= cache_size + prefetch."""
        held = len(self._cache)
        return held + (self._prefetcher.num_held if self._prefetcher is not None else 0)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, idx: int) -> Tensor:
        """Frame `idx` as [3, S, S] float32 on `device`. Raises FrameIndexError if out of range."""
        if not self._finalizer.alive:
            raise RuntimeError("PreprocessedFrames is closed")
        idx = self.source.check_index(idx)
        with self._lock:
            cached = self._cache.get(idx)
            if cached is not None:
                self._cache.move_to_end(idx)
                self._last_request = idx
                return cached
            # Evict before loading, so that cache + prefetched frames never exceed the bound.
            if self._cache_size is not None:
                while len(self._cache) >= self._cache_size:
                    self._cache.popitem(last=False)
            if self._prefetcher is None:
                tensor = self._load(idx)
            else:
                step = -1 if self._last_request == idx + 1 else 1
                tensor = self._prefetcher.take(idx, step)
            self._last_request = idx
            self._cache[idx] = tensor
            return tensor

    def __iter__(self) -> Iterator[Tensor]:
        """Every frame in order; for a live source, until the stream ends."""
        for idx in count():
            total = self.num_frames
            if total is not None and idx >= total:
                return
            try:
                tensor = self[idx]
            except FrameIndexError:
                total = self.num_frames
                if total is not None and idx >= total:
                    return
                raise
            yield tensor

    def close(self) -> None:
        """Stop prefetching, drop cached tensors and close the source (idempotent)."""
        self._finalizer()
        self._cache.clear()

    def __enter__(self) -> PreprocessedFrames:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
