"""Review hints: the score of `masklet.tracking.review` and `masklet video --review-csv`."""

from __future__ import annotations

import csv
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from masklet.cli import main
from masklet.tracking.review import (
    FrameReviewInput,
    ReviewConfig,
    ReviewScorer,
    mask_box,
    review_input,
    review_walk,
    score_frames,
)

BOX = (10.0, 10.0, 29.0, 29.0)  # a 20x20 box


def good(**changes) -> FrameReviewInput:
    """A confident frame: high presence and IoU, the anchor's area and box."""
    fields = {"object_score": 8.0, "iou": 0.95, "area": 400, "box": BOX}
    return FrameReviewInput(**{**fields, **changes})


PROMPT = good(prompted=True)


def test_confident_steady_frames_are_not_flagged():
    reviews = score_frames([PROMPT] + [good()] * 5)
    assert reviews[0].score == 0.0 and not reviews[0].flagged
    assert all(r.score == 0.0 and not r.flagged for r in reviews[1:])


@pytest.mark.parametrize("frame,reason", [
    (good(iou=0.05), "iou"),
    (good(object_score=-3.0), "presence"),
    (good(area=0, box=None), "area"),
    (good(area=4000), "area"),
    (good(box=(60.0, 60.0, 79.0, 79.0)), "jump"),
    (good(motion=0.0), "motion"),
])
def test_each_reason_raises_the_score(frame, reason):
    config = ReviewConfig()
    review = score_frames([PROMPT, frame], config)[1]
    assert review.reasons[reason] == 1.0
    weight = {"iou": config.w_iou, "presence": config.w_presence, "area": config.w_area,
              "jump": config.w_jump, "motion": config.w_motion}[reason]
    assert review.score == pytest.approx(weight)
    assert review.flagged == (weight >= config.threshold)


def test_reasons_add_up_as_a_noisy_or():
    config = ReviewConfig(w_iou=0.5, w_area=0.5, threshold=0.7)
    one = score_frames([PROMPT, good(iou=0.05)], config)[1]
    two = score_frames([PROMPT, good(iou=0.05, area=0, box=None)], config)[1]
    assert one.score == pytest.approx(0.5) and not one.flagged
    assert two.score == pytest.approx(0.75) and two.flagged


def test_ramps_are_linear_between_their_ends():
    config = ReviewConfig(iou_low=0.2, iou_high=0.6, w_iou=1.0)
    half = score_frames([PROMPT, good(iou=0.4)], config)[1]
    assert half.reasons["iou"] == pytest.approx(0.5)
    assert half.score == pytest.approx(0.5)


def test_doubt_carries_forward_until_a_prompt():
    config = ReviewConfig(carry=0.5)
    reviews = score_frames([PROMPT, good(iou=0.0), good(), good(), PROMPT, good()], config)
    bad = reviews[1].score
    assert bad == pytest.approx(config.w_iou)
    assert reviews[2].score == pytest.approx(0.5 * bad)
    assert reviews[3].score == pytest.approx(0.25 * bad)
    assert reviews[4].score == 0.0 and reviews[5].score == 0.0
    assert score_frames([PROMPT, good(iou=0.0), good()], ReviewConfig(carry=0.0))[2].score == 0.0


def test_area_is_compared_with_the_prompted_frame():
    # A slow shrink: no frame-to-frame jump, but the area drifts from the anchor's.
    frames = [PROMPT] + [good(area=int(400 * 0.8 ** k)) for k in range(1, 8)]
    reasons = [r.reasons["area"] for r in score_frames(frames, ReviewConfig(carry=0.0))[1:]]
    assert reasons == sorted(reasons) and reasons[0] == 0.0 and reasons[-1] == 1.0


def test_scores_stay_in_range_on_random_signals():
    rng = np.random.default_rng(0)
    scorer = ReviewScorer()
    for _ in range(300):
        x0, y0 = rng.uniform(0, 200, 2)
        w, h = rng.uniform(0, 100, 2)
        empty = rng.random() < 0.1
        frame = FrameReviewInput(float(rng.normal(0, 10)), float(rng.uniform(0, 1)),
                                 0 if empty else int(rng.integers(1, 10000)),
                                 None if empty else (x0, y0, x0 + w, y0 + h),
                                 float(rng.uniform(0, 1)) if rng.random() < 0.5 else None,
                                 bool(rng.random() < 0.05))
        review = scorer.step(frame)
        assert 0.0 <= review.score <= 1.0 and math.isfinite(review.score)
        assert review.flagged == (review.score >= scorer.config.threshold)


def test_mask_inputs():
    mask = np.zeros((30, 40), bool)
    assert mask_box(mask) is None
    mask[5:9, 10:20] = True
    assert mask_box(mask) == (10.0, 5.0, 19.0, 8.0)
    given = review_input(mask, 1.5, None, 0.3, prompted=True)
    assert (given.area, given.iou, given.motion, given.prompted) == (40, None, 0.3, True)


@pytest.mark.parametrize("bad", [{"threshold": 1.5}, {"threshold": float("nan")},
                                 {"iou_low": 0.9, "iou_high": 0.5}, {"carry": -0.1},
                                 {"w_area": 2.0}, {"area_ratio_low": 0.5}])
def test_config_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        ReviewConfig(**bad)


def test_review_walk_is_by_descending_score():
    assert review_walk([0.2, 0.9, 0.6, 0.9], [True, True, False, True]) == [1, 3, 0]


# ------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """An 8-frame synthetic clip as a JPEG folder, and its first frame's object masks."""
    from masklet.data.synthetic import SyntheticVideoConfig, generate_video

    video = generate_video(7_100_000, SyntheticVideoConfig(num_frames=8, num_objects=2))
    folder = tmp_path_factory.mktemp("review") / "clip"
    folder.mkdir()
    for i, frame in enumerate(video.frames):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    return folder, video.masks[0]


def _centre_click(mask: np.ndarray) -> str:
    ys, xs = np.nonzero(mask)
    k = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)  # a pixel of the object
    return f"{xs[k]},{ys[k]}"


def _read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_video_review_csv_offline_and_streaming(tmp_path, clip):
    """Both paths write the rows; streaming reads each frame's own signals, so its rows
    are the offline ones."""
    offline = _check_review_csv(tmp_path / "offline", clip, False)
    streamed = _check_review_csv(tmp_path / "stream", clip, True)
    assert [(r["frame"], r["object"], r["area"], r["flagged"]) for r in streamed] == [
        (r["frame"], r["object"], r["area"], r["flagged"]) for r in offline]
    for a, b in zip(streamed, offline):
        for column in ("object_score", "iou", "score"):
            assert float(a[column]) == pytest.approx(float(b[column]), abs=1e-4)


def _check_review_csv(tmp_path, clip, stream: bool) -> list[dict]:
    folder, first = clip
    prompts = []
    for obj in (1, 2):
        prompts += ["--prompt", f"0:{obj}:point={_centre_click(first == obj)}"]
    target = tmp_path / "hints" / "review.csv"
    args = ["video", str(folder), *prompts, "-o", str(tmp_path / "out"), "--no-overlay",
            "--no-coco", "-q", "--review-csv", str(target)] + (["--stream"] if stream else [])
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = _read(target)
    assert list(rows[0]) == ["frame", "object", "object_score", "iou", "area", "motion",
                             "score", "flagged"]
    # Frame 0 is the prompt; every other frame has one row per object, in frame order.
    assert [(int(r["frame"]), int(r["object"])) for r in rows] == [
        (f, o) for f in range(1, 8) for o in (1, 2)]
    threshold = ReviewConfig().threshold
    areas: dict[int, int] = {}
    for r in rows:
        score = float(r["score"])
        assert 0 <= score <= 1 and r["flagged"] == str(int(score >= threshold))
        assert r["motion"] == ""  # no motion-aware tracking
        with Image.open(tmp_path / "out" / "clip" / f"{int(r['frame']):05d}.png") as png:
            shown = np.array(png)
        # The area is the object's own mask; the label map gives overlaps to one object.
        assert int(r["area"]) >= int((shown == int(r["object"])).sum())
        areas[int(r["frame"])] = areas.get(int(r["frame"]), 0) + int(r["area"])
        assert areas[int(r["frame"])] >= int((shown > 0).sum()) or r["object"] == "1"
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    return rows


def test_video_review_csv_bad_target(tmp_path, clip):
    folder, _ = clip
    (tmp_path / "taken").mkdir()
    result = CliRunner().invoke(main, ["video", str(folder), "--prompt", "0:1:point=5,5", "-o",
                                       str(tmp_path / "out"), "--review-csv",
                                       str(tmp_path / "taken")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("masklet: error")]
    assert len(lines) == 1 and "--review-csv" in lines[0] and "folder" in lines[0]
    assert not (tmp_path / "out").exists()


def test_benchmark_measures_the_two_walks(monkeypatch):
    """benchmarks/review.py's numbers on a made-up track whose last 4 of 9 frames are wrong
    (low IoU there): the flags find them all first; frame order needs every frame."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "review.py"
    spec = importlib.util.spec_from_file_location("review_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look it up there
    monkeypatch.syspath_prepend(str(path.parent))  # as when run: beside _common.py
    spec.loader.exec_module(bench)
    inputs = [PROMPT] + [good()] * 5 + [good(iou=0.05)] * 4
    track = bench.Track(inputs, np.array([1.0] * 6 + [0.1] * 4))
    result = bench.measure([track], ReviewConfig())
    assert (result.frames, result.wrong, result.flagged) == (9, 4, 4)
    assert (result.precision, result.recall) == (1.0, 1.0)
    assert result.by_score == pytest.approx(4 / 9) and result.floor == pytest.approx(4 / 9)
    assert result.by_frame == 1.0
    # Wrong frames first in frame order: scrubbing finds them as soon as any order.
    early = bench.Track([PROMPT] + [good(iou=0.05)] * 4 + [good()] * 5,
                        np.array([1.0] + [0.1] * 4 + [1.0] * 5))
    assert bench.measure([early], ReviewConfig()).by_frame == pytest.approx(4 / 9)
