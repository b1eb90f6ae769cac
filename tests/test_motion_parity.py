"""Parity of motion-aware tracking with SAMURAI's official code (same random weights).

SAMURAI's fork is a package named `sam2`, so it runs in a subprocess
(tests/samurai_oracle.py) that gets the weights, the preprocessed frames and the calls,
and saves every yielded mask and, per tracked frame, the candidate it chose, the
filter's stable-frame count, the motion score and the predicted IoU. One object from a
box on frame 0, through real frames (bedroom) and a generated video with a look-alike
distractor; every frame's mask logits within 1e-3 of scale and the same candidate on
every frame.

Random weights give near-uniform predicted IoUs (about 0.5) and object scores (about
0.2), so some variants set thresholds inside those ranges: then the filter restarts,
motion overrules the predicted IoU and frames are left out of the memory bank, and each
test checks that what it covers did happen.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require_data
from reference import randomize_, rel_err

from masklet import VideoPredictor, build_model, get_config
from masklet.data.synthetic import SyntheticVideoConfig, generate_video
from masklet.io import preprocess_video_frame
from masklet.tracking.motion import MotionConfig
from masklet.tracking.motion_memory import is_reliable

TOL = 1e-3
ORACLE = Path(__file__).with_name("samurai_oracle.py")
SAMURAI = Path(__file__).resolve().parents[2] / "shared" / "reference" / "samurai"
# Inside the ranges random weights produce, so that every rule has an effect.
SENSITIVE = dict(stable_frames=3, motion_weight=0.9, stable_iou=0.495)

def _require_oracle() -> None:
    if not (SAMURAI / "sam2" / "sam2" / "sam2_video_predictor.py").exists():
        pytest.skip(f"SAMURAI's code not found at {SAMURAI}")
    for module in ("loguru", "hydra", "scipy"):
        pytest.importorskip(module, reason=f"the SAMURAI oracle imports {module}")


def bedroom(num_frames: int) -> tuple[list[np.ndarray], list[int]]:
    src = require_data("videos", "bedroom")
    frames = [np.array(Image.open(src / f"{i:05d}.jpg").convert("RGB")) for i in range(num_frames)]
    return frames, [300, 150, 600, 500]


def synthetic(num_frames: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """One object and a look-alike of it, over a textured background."""
    video = generate_video(seed, SyntheticVideoConfig(
        num_frames=num_frames, num_objects=1, num_distractors=1, num_reentering=0))
    ys, xs = np.nonzero(video.masks[0] == 1)
    return list(video.frames), [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def random_model(image_size: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(get_config("sam2.1_hiera_tiny").with_image_size(image_size),
                        random_weights=True)
    randomize_(model, seed)
    return model


def run_oracle(tmp_path, model, frames, box, motion: dict) -> dict:
    size = model.image_size
    job = {"state_dict": model.state_dict(), "image_size": size, "motion": motion,
           "frames": torch.stack([preprocess_video_frame(f, size) for f in frames]),
           "video_hw": tuple(frames[0].shape[:2]),
           "calls": [("prompt", dict(frame_idx=0, obj_id=1, box=box)), ("propagate", {})]}
    job_path, result_path = tmp_path / "job.pt", tmp_path / "result.pt"
    torch.save(job, job_path)
    done = subprocess.run([sys.executable, str(ORACLE), str(job_path), str(result_path)],
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"SAMURAI oracle failed:\n{done.stderr[-4000:]}"
    return torch.load(result_path, weights_only=False)


def run_ours(model, frames, box, motion: dict):
    predictor = VideoPredictor(model, fill_hole_area=0, progress=False,
                               motion=MotionConfig(**motion))
    state = predictor.init_state(frames)
    with torch.inference_mode():
        prompt = predictor.add_new_points_or_box(state, 0, 1, box=box)
        frames_out = list(predictor.propagate_in_video(state))
    return prompt, frames_out, state.objects[1]


def check_parity(tmp_path, frames, box, motion: dict, image_size: int = 256) -> list:
    """Run both sides; compare masks, candidates and filters frame by frame."""
    _require_oracle()
    model = random_model(image_size)
    theirs = run_oracle(tmp_path, model, frames, box, motion)
    prompt, ours, obj = run_ours(model, frames, box, motion)
    ref_prompt_ids, ref_prompt = theirs["calls"][0]["prompt"]
    assert prompt[1] == ref_prompt_ids and rel_err(prompt[2], ref_prompt) < TOL
    ref_frames, records = theirs["calls"][1]["frames"], theirs["records"]
    assert [f for f, _, _ in ours] == [f for f, _, _ in ref_frames] == list(range(len(frames)))
    rows = []
    for (f, ids, masks), (_, ref_ids, ref_masks) in zip(ours, ref_frames):
        assert ids == ref_ids
        err = rel_err(masks, ref_masks)
        assert err < TOL, f"frame {f}: relative error {err:.2e}"
        if f == 0:
            continue  # the prompted frame: one mask from the box, no choice
        rec, out = records[f], obj.non_cond_outputs[f]
        assert rec["candidate"] >= 0, f"frame {f}: the oracle's choice is ambiguous"
        assert out.candidate == rec["candidate"], f"frame {f}: candidate differs"
        assert out.motion.stable_frames == rec["stable_frames"], f"frame {f}"
        assert (out.motion_score is None) == (rec["motion_score"] is None), f"frame {f}"
        if rec["motion_score"] is not None:
            assert abs(out.motion_score - rec["motion_score"]) < 1e-6
        assert abs(float(out.iou_score) - rec["iou"]) < TOL
        rows.append((rec, out))
    return rows


def _excluded_by(rows, config: MotionConfig) -> set[str]:
    """Which memory thresholds alone kept some tracked frame out of the memory bank."""
    found = set()
    for _, out in rows:
        iou_ok = float(out.iou_score) > config.memory_iou
        score_ok = float(out.object_score_logits) > config.memory_object_score
        motion_ok = out.motion_score is None or out.motion_score > config.memory_motion
        for name, alone in (("iou", not iou_ok and score_ok and motion_ok),
                            ("object_score", iou_ok and not score_ok and motion_ok),
                            ("motion", iou_ok and score_ok and not motion_ok)):
            if alone:
                found.add(name)
    return found


def test_synthetic_with_distractor_published_defaults(tmp_path):
    """SAMURAI's defaults, long enough for the filter to become stable (15 frames)."""
    frames, box = synthetic(17)
    rows = check_parity(tmp_path, frames, box, {})
    assert any(rec["motion_score"] is not None for rec, _ in rows), "motion never scored"


def test_synthetic_motion_overrules_iou_and_memory_thresholds(tmp_path):
    motion = dict(SENSITIVE, memory_iou=0.499, memory_object_score=0.2575, memory_motion=1.0)
    frames, box = synthetic(10)
    rows = check_parity(tmp_path, frames, box, motion)
    assert any(rec["candidate"] != rec["argmax_iou"] for rec, _ in rows), \
        "motion never changed the choice: the test would not see a wrong weighting"
    assert any(rec["stable_frames"] == 0 for rec, _ in rows), "the filter never restarted"
    assert _excluded_by(rows, MotionConfig(**motion)) == {"iou", "object_score", "motion"}


def test_bedroom_presence_threshold_and_empty_masks(tmp_path):
    """A presence threshold inside the object scores: some frames' masks are empty (the
    filter's empty-box rule), and the first tracked frame is reliable (so the scan's
    skipping of frame 1 matters)."""
    motion = dict(SENSITIVE, memory_iou=0.503, memory_object_score=0.2245, present_logit=0.225)
    frames, box = bedroom(10)
    rows = check_parity(tmp_path, frames, box, motion)
    config = MotionConfig(**motion)
    present = [float(out.object_score_logits) > config.present_logit for _, out in rows]
    assert any(present) and not all(present)
    reliable = [is_reliable(out, config) for _, out in rows]
    assert reliable[0] and not all(reliable)


@pytest.mark.slow
def test_bedroom_1024_published_defaults(tmp_path):
    frames, box = bedroom(17)  # the filter becomes stable on frame 16
    rows = check_parity(tmp_path, frames, box, {}, image_size=1024)
    assert any(rec["motion_score"] is not None for rec, _ in rows)


@pytest.mark.slow
def test_synthetic_1024_thresholds_changed(tmp_path):
    frames, box = synthetic(12)
    motion = dict(SENSITIVE, memory_iou=0.499, memory_object_score=0.2575, memory_motion=1.0)
    check_parity(tmp_path, frames, box, motion, image_size=1024)
