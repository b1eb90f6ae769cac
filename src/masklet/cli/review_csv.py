"""`masklet video --review-csv FILE`: the review hints of a tracked video as a CSV.

One row per tracked frame and object (frames where the object was prompted are the
annotator's own masks and left out), in frame order: the model's signals, the "needs
review" score of `masklet.tracking.review` (default `ReviewConfig`) and whether it is
flagged. Scores run in tracking order, one scorer per object and pass (forward from the
first prompted frame, then backward before it), as in the app.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from masklet.export import atomic_write
from masklet.tracking.review import PassScorers, ReviewConfig
from masklet.tracking.signals import FrameSignals

COLUMNS = ("frame", "object", "object_score", "iou", "area", "motion", "score", "flagged")


class ReviewLog:
    """Collects the rows while tracking: `begin_pass` before each pass, `add` per frame."""

    def __init__(self, prompted: set[tuple[int, int]], config: ReviewConfig | None = None):
        self.prompted = prompted
        self.scorers = PassScorers(config)
        self.rows: dict[tuple[int, int], list] = {}

    def begin_pass(self) -> None:
        self.scorers.reset()

    def add(self, frame: int, obj_ids: list[int], masks: np.ndarray,
            signals: dict[int, FrameSignals]) -> None:
        """One tracked frame: obj_ids [N], masks [N, H, W] bool, the model's signals."""
        for obj, mask in zip(obj_ids, masks):
            s = signals.get(obj)
            if s is None:
                continue
            prompted = (frame, obj) in self.prompted
            given, review = self.scorers.step(obj, mask, s.object_score, s.iou, s.motion,
                                              prompted)
            if not prompted:
                self.rows[(frame, obj)] = [frame, obj, given.object_score, given.iou,
                                           given.area, given.motion, review.score,
                                           int(review.flagged)]

    def write(self, path: Path) -> None:
        """The CSV, written atomically (complete or not at all)."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        for key in sorted(self.rows):
            writer.writerow(["" if v is None else f"{v:.6g}" if isinstance(v, float) else v
                             for v in self.rows[key]])
        with atomic_write(path, "w") as f:
            f.write(text.getvalue())
