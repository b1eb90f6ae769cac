"""What `masklet batch` shows: a progress bar over videos (with frames/s) and a summary."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import click


@dataclass
class Tally:
    """Counts of one run, updated as each video's record arrives."""

    skipped: int = 0
    records: list[dict] = field(default_factory=list)
    retried: int = 0
    start: float = field(default_factory=time.perf_counter)

    def of(self, status: str) -> list[dict]:
        return [r for r in self.records if r["status"] == status]


class Progress:
    """tqdm over the videos still to do; frames and frames/s in the postfix (the bar's own
    rate and ETA are in videos)."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="video", desc="batch", disable=quiet,
                        dynamic_ncols=True)
        self.frames = 0
        self.failed = 0
        self.start = time.perf_counter()

    def update(self, record: dict) -> None:
        self.frames += record.get("frames") or 0
        self.failed += record["status"] != "ok"
        rate = self.frames / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(frames=self.frames, fps=f"{rate:.1f}", failed=self.failed,
                             refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def summary(tally: Tally, total: int, interrupted: bool = False) -> str:
    """The end-of-run table: one row per status, then the failed videos and their errors."""
    wall = time.perf_counter() - tally.start
    rows = [("status", "videos", "frames", "objects", "seconds")]
    for status in ("ok", "failed"):
        records = tally.of(status)
        rows.append((status, str(len(records)), str(sum(r["frames"] for r in records)),
                     str(sum(r["objects"] for r in records)),
                     f"{sum(r['seconds'] for r in records):.1f}"))
    rows.append(("skipped", str(tally.skipped), "-", "-", "-"))
    if interrupted:
        rows.append(("not run", str(total - tally.skipped - len(tally.records)), "-", "-", "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    done = len(tally.records)
    per_min = 60 * done / wall if wall > 0 else 0.0
    lines.append(f"{done} video(s) in {wall:.1f}s ({per_min:.1f} videos/min); "
                 f"{tally.retried} retried after a worker died")
    for record in tally.of("failed"):
        lines.append(f"failed: {record['name']} (line {record['line']}): {record['error']}")
    return "\n".join(lines)


def echo_summary(tally: Tally, total: int, interrupted: bool = False) -> None:
    click.echo(summary(tally, total, interrupted), err=True)
