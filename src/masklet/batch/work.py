"""One video of a batch, tracked and written exactly as `masklet video` / `auto-video` do.

This is what a worker runs; it needs no Ray, so it is also the reference the tests compare.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from masklet.batch.manifest import Job


@dataclass(frozen=True)
class RunOptions:
    """Output and precision options shared by every video of a run."""

    overlay: bool = True
    coco: bool = True
    dtype: str = "float32"


def process_job(model, job: Job, out_dir: Path, options: RunOptions) -> dict:
    """Track `job`'s video and write `out_dir/job.name/` atomically (replacing a stale
    folder); returns its record: status, frames, objects, seconds, error.

    Every failure of the video itself (missing or corrupt file, prompts that do not fit
    it) becomes a "failed" record; only the death of the process escapes.
    """
    from masklet.cli.common import CliError, one_line

    start = time.perf_counter()
    record = {"line": job.line, "name": job.name, "video": str(job.video), "status": "ok",
              "frames": 0, "objects": 0, "seconds": 0.0, "error": None,
              "pid": os.getpid(), "node": socket.gethostname()}
    try:
        if job.error is not None:
            raise CliError(job.error)
        frames, objects = _track_and_write(model, job, Path(out_dir) / job.name, options)
        record.update(frames=frames, objects=objects)
    except CliError as exc:
        record.update(status="failed", error=exc.format_message())
    except Exception as exc:  # noqa: BLE001 - one bad video must not stop the others
        record.update(status="failed", error=f"{type(exc).__name__}: {one_line(exc)}")
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def _track_and_write(model, job: Job, target: Path, options: RunOptions) -> tuple[int, int]:
    from masklet.cli.auto import track_auto_video
    from masklet.cli.common import CliError, autocast
    from masklet.cli.video import _apply, _track, _write_outputs, overlay_fps

    video = job.video
    if not video.exists():
        raise CliError(f"video not found: {video}")
    if job.auto is None:
        from masklet.predictor.video import VideoPredictor

        predictor = VideoPredictor(model, progress=False)
        with autocast(model.device, options.dtype):
            state = predictor.init_state(str(video))
            for prompt in job.prompts:
                _apply(predictor, state, prompt)
            labels = _track(predictor, state)
        fps = overlay_fps(video, None)
    else:
        auto = dict(job.auto)
        fps = overlay_fps(video, auto.pop("fps"))
        every, max_objects = auto.pop("every"), auto.pop("max_objects")
        state, labels = track_auto_video(model, video, every, max_objects, options.dtype, auto)
    sequence = video.stem if video.is_file() else video.name
    _write_outputs(target, True, sequence, state, labels, options.overlay, options.coco, fps,
                   True)
    return len(labels), len(state.obj_ids)
