"""Per-frame cost of motion-aware tracking (SAMURAI) on CPU, against plain SAM 2 tracking.

The same model tracks the same generated video (objects and look-alike distractors)
with the option off and on, alternately, ``--repeats`` times; each run propagates from a
fresh session, so both pay for the same image encodings. Reported: seconds per frame
(min and median over the runs; the min is the least disturbed by other load) and the
overhead of the option. Because other load on the machine moves whole-run times by
several percent, the time spent in the option's own work (choosing the candidate with
the filter, choosing the memories) is also measured directly, per frame.

    python benchmarks/motion.py [--preset sam2.1_hiera_tiny --size 1024] [--objects 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from masklet import VideoPredictor, build_model, get_config
from masklet.data.synthetic import SyntheticVideoConfig, generate_video
from masklet.tracking import memory_bank, motion_heads

_SPENT = [0.0]  # seconds inside the option's own functions


def _timed(fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _SPENT[0] += time.perf_counter() - start
    return wrapper


# The filter's candidate choice and SAMURAI's memory choice: all the option adds (its
# decoder pass is the same computation as SAM 2's).
motion_heads.choose_candidate = _timed(motion_heads.choose_candidate)
memory_bank.motion_memory_frames = _timed(memory_bank.motion_memory_frames)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default=None, help="default: the bundled nano model; another "
                   "preset runs with random weights (the cost does not depend on them)")
    p.add_argument("--size", type=int, default=None, help="model input size (default: preset's)")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--objects", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def _model(preset: str | None, size: int | None):
    if preset is None:
        model = build_model()
        return model if size is None else build_model(model.config.with_image_size(size))
    config = get_config(preset)
    return build_model(config if size is None else config.with_image_size(size),
                       random_weights=True)


def seconds_per_frame(model, frames, masks, num_objects: int, motion: bool) -> float:
    predictor = VideoPredictor(model, progress=False, motion=motion)
    state = predictor.init_state(frames)
    with torch.inference_mode():
        for obj_id in range(1, num_objects + 1):
            predictor.add_new_mask(state, 0, obj_id, masks[0] == obj_id)
        start = time.perf_counter()
        count = sum(1 for _ in predictor.propagate_in_video(state))
    return (time.perf_counter() - start) / count


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model = _model(args.preset, args.size)
    clip = generate_video(0, SyntheticVideoConfig(num_frames=args.frames, height=256, width=256,
                                                  num_objects=args.objects, num_reentering=0))
    frames = list(clip.frames)
    times: dict[bool, list[float]] = {False: [], True: []}
    own: list[float] = []
    for _ in range(args.repeats):
        for motion in (False, True):
            _SPENT[0] = 0.0
            times[motion].append(seconds_per_frame(model, frames, clip.masks, args.objects,
                                                   motion))
            if motion:
                own.append(_SPENT[0] / (args.frames - 1))
    print(f"model {model.config.name} at {model.image_size} px, {args.objects} object(s), "
          f"{args.frames} frames, {args.threads} thread(s), {args.repeats} runs each")
    for motion, label in ((False, "SAM 2"), (True, "motion-aware")):
        print(f"  {label:<13} min {min(times[motion]):.4f} s/frame, "
              f"median {statistics.median(times[motion]):.4f} s/frame")
    overhead = min(times[True]) / min(times[False]) - 1
    median = statistics.median(times[True]) / statistics.median(times[False]) - 1
    print(f"  overhead of the option: {100 * overhead:+.1f} % (min), {100 * median:+.1f} % "
          f"(median)")
    spent = statistics.median(own)
    print(f"  the option's own work: {1000 * spent:.2f} ms/frame, "
          f"{100 * spent / statistics.median(times[False]):.1f} % of a SAM 2 frame")


if __name__ == "__main__":
    main()
