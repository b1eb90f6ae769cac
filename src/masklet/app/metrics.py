"""The data engine's measures of a video, per object and overall, from the event log.

- clicks: points clicked (positive or negative; a box counts as one), undone ones too:
  they were effort spent;
- clicks per clicked frame: clicks / frames that received at least one click;
- share of frames edited: frames with any prompt (click, box, imported mask, clear) / all;
- time per frame: active annotation time / all frames, where active time sums the gaps
  between consecutive actions on the video, each capped at `idle_cap_s` (a pause is not
  work); per object, the gaps that end in an action on that object.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from masklet.app import store
from masklet.app.db import Database

EDITS = ("point", "box", "mask", "clear")
CLICKS = ("point", "box")


@dataclass
class Tally:
    """Counters of one object (or of the whole video)."""

    clicks: int = 0
    boxes: int = 0
    clicked: set[int] = field(default_factory=set)
    edited: set[int] = field(default_factory=set)
    masked: set[int] = field(default_factory=set)
    time_s: float = 0.0

    def add(self, kind: str, frame: int | None, clicks: int, gap: float) -> None:
        self.time_s += gap
        if kind in CLICKS:
            self.clicks += clicks
            self.boxes += kind == "box"
            self.clicked.add(frame)
        if kind in EDITS:
            self.edited.add(frame)

    def as_json(self, num_frames: int) -> dict:
        return {
            "clicks": self.clicks,
            "boxes": self.boxes,
            "clicked_frames": len(self.clicked),
            "clicks_per_clicked_frame": self.clicks / len(self.clicked) if self.clicked else 0.0,
            "edited_frames": len(self.edited),
            "edited_share": len(self.edited) / num_frames if num_frames else 0.0,
            "masked_frames": len(self.masked),
            "annotation_time_s": self.time_s,
            "time_per_frame_s": self.time_s / num_frames if num_frames else 0.0,
        }


def video_metrics(db: Database, video_id: int, num_frames: int, idle_cap_s: float) -> dict:
    """``{num_frames, video: M, objects: {"<id>": M}}`` (M: see `Tally.as_json`)."""
    events = db.query("SELECT t, kind, obj, frame, clicks FROM events WHERE video_id = ? "
                      "ORDER BY t, id", (video_id,))
    known = {o["id"] for o in store.objects(db, video_id)}
    video = Tally()
    objects = {obj: Tally() for obj in known}
    previous = None
    for e in events:
        gap = 0.0 if previous is None else min(max(e["t"] - previous, 0.0), idle_cap_s)
        previous = e["t"]
        video.add(e["kind"], e["frame"], e["clicks"], gap)
        if e["obj"] in objects:
            objects[e["obj"]].add(e["kind"], e["frame"], e["clicks"], gap)
    for r in store.shown_masks(db, video_id, with_rle=False):
        if r["area"] > 0:
            video.masked.add(r["frame"])
            if r["obj"] in objects:
                objects[r["obj"]].masked.add(r["frame"])
    return {"num_frames": num_frames, "video": video.as_json(num_frames),
            "objects": {str(k): t.as_json(num_frames) for k, t in sorted(objects.items())}}
