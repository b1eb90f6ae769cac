"""Typed evaluation results, their CSV file and a printable table.

Scores are fractions in [0, 1] (CSV keeps them so); the table shows percentages.
Global scores average over all objects of all sequences, as the DAVIS toolkit and the
SA-V evaluator do (a sequence with three objects weighs three times one with one).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from masklet.eval.metrics import Statistics
from masklet.export.atomic import atomic_write

CSV_COLUMNS = (
    "sequence",
    "object",
    "frames",
    "J&F-Mean",
    "J-Mean",
    "J-Recall",
    "J-Decay",
    "F-Mean",
    "F-Recall",
    "F-Decay",
    "missing_frames",
)
GLOBAL_ROW = "Global"


@dataclass(frozen=True)
class ObjectScore:
    """Scores of one object of one sequence.

    Attributes:
        sequence, object_id: which object.
        frame_names: the evaluated frames (first/last dropped when the protocol says so).
        j_frames, f_frames: per-frame J and F, aligned with ``frame_names``.
        j, f: mean / recall / decay over those frames.
        missing_frames: evaluated frames with no prediction file (scored as empty masks).
    """

    sequence: str
    object_id: int
    frame_names: tuple[str, ...]
    j_frames: tuple[float, ...]
    f_frames: tuple[float, ...]
    j: Statistics
    f: Statistics
    missing_frames: tuple[str, ...] = ()

    @property
    def jf(self) -> float:
        return (self.j.mean + self.f.mean) / 2


@dataclass(frozen=True)
class SequenceScore:
    """Mean over the objects of one sequence."""

    name: str
    num_objects: int
    j_mean: float
    f_mean: float

    @property
    def jf(self) -> float:
        return (self.j_mean + self.f_mean) / 2


def _mean_statistics(stats: list[Statistics]) -> Statistics:
    return Statistics(
        mean=float(np.mean([s.mean for s in stats])),
        recall=float(np.mean([s.recall for s in stats])),
        decay=float(np.mean([s.decay for s in stats])),
    )


@dataclass(frozen=True)
class EvalResult:
    """Scores of every object, plus the settings they were computed with."""

    objects: tuple[ObjectScore, ...]
    skip_first_and_last: bool
    bound_th: float
    missing_sequences: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.objects:
            raise ValueError("an evaluation result needs at least one object")

    @property
    def j(self) -> Statistics:
        return _mean_statistics([o.j for o in self.objects])

    @property
    def f(self) -> Statistics:
        return _mean_statistics([o.f for o in self.objects])

    @property
    def jf(self) -> float:
        return (self.j.mean + self.f.mean) / 2

    @property
    def num_missing_frames(self) -> int:
        return sum(len(set(frames)) for frames in self.missing_frames.values())

    @property
    def missing_frames(self) -> dict[str, tuple[str, ...]]:
        """Sequence -> sorted frames lacking a prediction (only sequences with some)."""
        found: dict[str, set[str]] = {}
        for obj in self.objects:
            if obj.missing_frames:
                found.setdefault(obj.sequence, set()).update(obj.missing_frames)
        return {seq: tuple(sorted(names)) for seq, names in found.items()}

    def sequences(self) -> tuple[SequenceScore, ...]:
        """Per-sequence means over objects, in evaluation order."""
        grouped: dict[str, list[ObjectScore]] = {}
        for obj in self.objects:
            grouped.setdefault(obj.sequence, []).append(obj)
        return tuple(
            SequenceScore(
                name=name,
                num_objects=len(objs),
                j_mean=float(np.mean([o.j.mean for o in objs])),
                f_mean=float(np.mean([o.f.mean for o in objs])),
            )
            for name, objs in grouped.items()
        )


def _csv_row(
    sequence: str, obj: str, frames: int, j: Statistics, f: Statistics, missing: int
) -> list[str]:
    scores = [(j.mean + f.mean) / 2, j.mean, j.recall, j.decay, f.mean, f.recall, f.decay]
    return [sequence, obj, str(frames), *(f"{v:.6f}" for v in scores), str(missing)]


def result_csv_text(result: EvalResult) -> str:
    """CSV text: a header, a ``Global`` row, then one row per object."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    total_frames = sum(len(o.frame_names) for o in result.objects)
    writer.writerow(
        _csv_row(GLOBAL_ROW, "", total_frames, result.j, result.f, result.num_missing_frames)
    )
    for o in result.objects:
        writer.writerow(
            _csv_row(
                o.sequence, str(o.object_id), len(o.frame_names), o.j, o.f, len(o.missing_frames)
            )
        )
    return buffer.getvalue()


def write_csv(result: EvalResult, path: str | os.PathLike) -> Path:
    """Write the result CSV atomically (a temporary sibling renamed into place)."""
    with atomic_write(path, "w") as handle:
        handle.write(result_csv_text(result))
    return Path(path)


def _pct(value: float) -> str:
    return f"{100 * value:6.1f}"


def format_table(result: EvalResult) -> str:
    """A fixed-width text table (percentages): global scores, then one line per object."""
    width = max(len(GLOBAL_ROW), *(len(o.sequence) for o in result.objects))
    columns = ("J&F", "J", "F", "J-R", "F-R", "J-D", "F-D")
    header = f"{'sequence':<{width}}  {'obj':>4}  " + "  ".join(f"{c:>6}" for c in columns)
    lines = [header, "-" * len(header)]

    def line(name: str, obj: str, jf: float, j: Statistics, f: Statistics) -> str:
        cells = [_pct(v) for v in (jf, j.mean, f.mean, j.recall, f.recall, j.decay, f.decay)]
        return f"{name:<{width}}  {obj:>4}  " + "  ".join(cells)

    lines.append(line(GLOBAL_ROW, "", result.jf, result.j, result.f))
    lines.extend(line(o.sequence, str(o.object_id), o.jf, o.j, o.f) for o in result.objects)
    protocol = "first and last frames skipped" if result.skip_first_and_last else "all frames"
    lines.append(
        f"{len(result.objects)} objects in {len(result.sequences())} sequences; {protocol}; "
        f"bound_th={result.bound_th:g}"
    )
    if result.missing_sequences:
        lines.append(
            f"warning: no prediction folder for {len(result.missing_sequences)} sequences: "
            f"{', '.join(result.missing_sequences)}"
        )
    if result.num_missing_frames:
        lines.append(
            f"warning: {result.num_missing_frames} predicted frames missing (scored as empty) in "
            f"{len(result.missing_frames)} sequences: {', '.join(result.missing_frames)}"
        )
    return "\n".join(lines)
