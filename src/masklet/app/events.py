"""Live updates for the page: a per-video event log that server-sent-event streams read.

Worker threads publish; each SSE stream polls for events newer than the last one it
sent. Polling a short in-memory log keeps threads and the event loop fully decoupled.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

KEEP = 256  # events kept per video; a client further behind just refetches everything
# The log of events that every video's stream carries: the label set belongs to the data
# folder, so a page open on another video must hear about its changes too.
EVERY_VIDEO = -1


class EventHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        self._logs: dict[int, deque[tuple[int, str, dict]]] = {}

    def publish(self, video_id: int, event: str, data: dict) -> None:
        with self._lock:
            self._seq += 1
            log = self._logs.setdefault(video_id, deque(maxlen=KEEP))
            log.append((self._seq, event, data))

    def publish_to_all(self, event: str, data: dict) -> None:
        """An event for the streams of every video (open now or later within `KEEP`)."""
        self.publish(EVERY_VIDEO, event, data)

    def since(self, video_id: int, seq: int) -> list[tuple[int, str, dict]]:
        """The video's events and those for every video, newer than ``seq``, in order."""
        with self._lock:
            events = [e for key in (video_id, EVERY_VIDEO) for e in self._logs.get(key, ())
                      if e[0] > seq]
        return sorted(events, key=lambda e: e[0])

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def forget(self, video_id: int) -> None:
        with self._lock:
            self._logs.pop(video_id, None)

    async def stream(self, video_id: int, hello: dict, since: int,
                     is_closed: Callable[[], Awaitable[bool]], *, poll_s: float = 0.1,
                     keepalive_s: float = 15.0) -> AsyncIterator[str]:
        """SSE text: a `hello`, then every event published for the video after `since`
        (read `last_seq` before building `hello`, so nothing falls in between)."""
        seq = since
        yield sse("hello", hello)
        idle = 0.0
        while not await is_closed():
            events = self.since(video_id, seq)
            for _seq, event, data in _coalesced(events):
                yield sse(event, data)
            if events:
                seq = events[-1][0]
                idle = 0.0
            elif idle >= keepalive_s:
                yield ": keep-alive\n\n"
                idle = 0.0
            await asyncio.sleep(poll_s)
            idle += poll_s


def _coalesced(events: list[tuple[int, str, dict]]) -> list[tuple[int, str, dict]]:
    """Drop progress events followed by a newer progress event of the same job."""
    out = []
    for i, (seq, event, data) in enumerate(events):
        later = events[i + 1 :]
        superseded = any(e == "progress" for _, e, _ in later)
        if event == "progress" and superseded and data["job"]["state"] == "running":
            continue
        out.append((seq, event, data))
    return out


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
