"""Motion-aware tracking beyond the SAMURAI oracle: its parts, several objects, streaming,
objects added mid-video, reverse passes and corrections.

The oracle parity lives in tests/test_motion_parity.py. Here the filter is compared with
SAMURAI's own Kalman filter module (loaded from its file, numpy only), and the
predictors run a reduced tiny model at 64 px with random weights on generated videos.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from reference import rel_err

from masklet import StreamingTracker, VideoPredictor, build_model, get_config
from masklet.data.synthetic import SyntheticVideoConfig, generate_video
from masklet.tracking import kalman
from masklet.tracking.kalman import EMPTY_BOX
from masklet.tracking.motion import (
    FRESH,
    MotionConfig,
    choose_candidate,
    mask_box,
    resolve_motion,
)
from masklet.tracking.motion_memory import frames_to_keep, motion_memory_frames
from masklet.tracking.state import FrameOutput

KALMAN_FILE = (Path(__file__).resolve().parents[2] / "shared" / "reference" / "samurai" / "sam2"
               / "sam2" / "utils" / "kalman_filter.py")
# Thresholds inside the ranges random weights produce, so every rule acts.
SENSITIVE = MotionConfig(stable_frames=2, motion_weight=0.9, stable_iou=0.3, memory_iou=0.45,
                         memory_object_score=0.0045, memory_motion=0.9)


# One intra-op thread (conftest): on a busy 2-core machine two threads contend.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------ parts
def _samurai_kalman():
    if not KALMAN_FILE.exists():
        pytest.skip(f"SAMURAI's code not found at {KALMAN_FILE}")
    pytest.importorskip("scipy")
    spec = importlib.util.spec_from_file_location("samurai_kalman_filter", KALMAN_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.KalmanFilter()


def test_kalman_filter_matches_samurai():
    ref = _samurai_kalman()
    rng = np.random.default_rng(0)
    box = (100.0, 80.0, 180.0, 200.0)
    ours = kalman.initiate(box)
    mean, cov = ref.initiate(np.array(ref.xyxy_to_xyah(list(box))))
    for step in range(40):
        ours, (mean, cov) = kalman.predict(ours), ref.predict(mean, cov)
        np.testing.assert_allclose(ours.mean.numpy(), mean, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(ours.covariance.numpy(), cov, rtol=1e-10, atol=1e-9)
        drift = step * 3.0
        measured = tuple(float(v) for v in np.array(box) + drift + rng.normal(0, 4, 4))
        candidates = [measured, EMPTY_BOX, (0.0, 0.0, 50.0, 40.0)]
        ref_ious = ref.compute_iou(mean[:4], [list(c) for c in candidates])
        ious = [kalman.box_iou(ours.box_xyxy(), c) for c in candidates]
        np.testing.assert_allclose(ious, ref_ious, rtol=1e-9, atol=1e-12)
        ours = kalman.update(ours, measured)
        mean, cov = ref.update(mean, cov, np.array(ref.xyxy_to_xyah(list(measured))))
        np.testing.assert_allclose(ours.mean.numpy(), mean, rtol=1e-9, atol=1e-8)
        np.testing.assert_allclose(ours.covariance.numpy(), cov, rtol=1e-9, atol=1e-8)


def test_config_and_switch():
    assert MotionConfig() == MotionConfig(stable_frames=15, stable_iou=0.3, motion_weight=0.25,
                                          memory_iou=0.5, memory_object_score=0.0,
                                          memory_motion=0.0, present_logit=-1.0)
    assert resolve_motion(True) == MotionConfig() and resolve_motion(False) is None
    assert resolve_motion(None) is None and resolve_motion(SENSITIVE) is SENSITIVE
    with pytest.raises(ValueError, match="motion_weight"):
        MotionConfig(motion_weight=1.5)
    with pytest.raises(ValueError, match="stable_frames"):
        MotionConfig(stable_frames=0)
    with pytest.raises(TypeError):
        resolve_motion("yes")


def _candidates(boxes) -> torch.Tensor:
    """[M, 64, 64] logits, each +1 inside its inclusive box and -1 outside."""
    masks = -torch.ones(len(boxes), 64, 64)
    for m, (x0, y0, x1, y1) in zip(masks, boxes):
        m[y0 : y1 + 1, x0 : x1 + 1] = 1.0
    return masks


def test_choose_candidate_rules():
    cfg = MotionConfig(stable_frames=2, motion_weight=0.5, stable_iou=0.3)
    here, there = (10, 10, 29, 29), (40, 40, 59, 59)
    masks = _candidates([there, here, here])
    assert mask_box(masks[0]) == there and mask_box(-torch.ones(64, 64)) == EMPTY_BOX
    # A young filter keeps SAM 2's best-IoU choice (candidate 0) and starts on it.
    first = choose_candidate(cfg, FRESH, masks, torch.tensor([0.9, 0.8, 0.1]), False)
    assert first.index == 0 and first.motion_score is None and first.state.stable_frames == 1
    start = choose_candidate(cfg, FRESH, _candidates([here, there, there]),
                             torch.tensor([0.9, 0.8, 0.1]), False).state
    young = choose_candidate(cfg, start, _candidates([here] * 3), torch.tensor([0.9, 0.5, 0.1]),
                             False).state
    assert young.stable_frames == 2 and young.reverse is False
    # Stable: motion (the object stays "here") outweighs a slightly higher predicted IoU.
    stable = choose_candidate(cfg, young, masks, torch.tensor([0.9, 0.8, 0.1]), False)
    assert stable.index == 1 and stable.motion_score == pytest.approx(1.0, abs=0.05)
    # A chosen mask below the stable IoU restarts the filter on the next frame.
    low = choose_candidate(cfg, young, masks, torch.tensor([0.2, 0.25, 0.1]), False)
    assert low.state.stable_frames == 0
    restart = choose_candidate(cfg, low.state, masks, torch.tensor([0.9, 0.8, 0.1]), False)
    assert restart.index == 0 and restart.state.stable_frames == 1
    # One mask: nothing to choose, the filter is left as it was.
    single = choose_candidate(cfg, young, masks[:1], torch.tensor([0.9]), False)
    assert single.index == 0 and single.state is young


def _out(iou: float, score: float = 1.0, motion: float | None = None) -> FrameOutput:
    z = torch.zeros(1, 1)
    return FrameOutput(z, z, torch.tensor([[score]]), torch.zeros(1), torch.tensor([iou]),
                       motion)


def test_memory_frame_selection():
    cfg = MotionConfig(memory_iou=0.5, memory_object_score=0.0, memory_motion=0.2)
    good, bad_iou, bad_score, bad_motion = _out(0.9), _out(0.4), _out(0.9, -1.0), _out(0.9, 1, 0.1)
    non_cond = {1: good, 2: good, 3: bad_iou, 4: good, 5: bad_score, 6: good, 7: bad_motion,
                8: good, 9: good, 10: good, 11: bad_iou}
    # Frame 12: the 6 nearest reliable frames, but the adjacent (unreliable) frame 11 always.
    picked = motion_memory_frames(12, non_cond, cfg, 7, False, None)
    assert picked == [(1, 4), (2, 6), (3, 8), (4, 9), (5, 10), (6, 11)]
    # Frame 1 is never scanned (as in SAMURAI), so only 2 and the adjacent frame here.
    assert motion_memory_frames(4, non_cond, cfg, 7, False, None) == [(5, 2), (6, 3)]
    # Backwards: the mirror image, bounded by the video's end.
    back = {t: good for t in range(5, 20)} | {6: bad_iou}
    assert motion_memory_frames(4, back, cfg, 3, True, 20) == [(1, 7), (2, 5)]
    assert frames_to_keep(12, non_cond, cfg, 7, None) == {2, 4, 6, 8, 9, 10, 11}


# ------------------------------------------------------------------ predictors
@pytest.fixture(scope="module")
def fast_model():
    """Tiny with a 4-block, 16-channel trunk and a 1-layer memory attention, at 64 px."""
    base = get_config("sam2.1_hiera_tiny").with_image_size(64)
    trunk = dataclasses.replace(base.trunk, embed_dim=16, stages=(1, 1, 1, 1),
                                global_att_blocks=())
    memory = dataclasses.replace(base.memory, attention_layers=1, attention_ffn_dim=256,
                                 fuser_layers=1)
    torch.manual_seed(0)
    return build_model(dataclasses.replace(base, trunk=trunk, memory=memory),
                       random_weights=True)


@pytest.fixture(scope="module")
def video():
    cfg = SyntheticVideoConfig(num_frames=24, height=96, width=96, num_objects=2,
                               num_distractors=1, num_reentering=0)
    return generate_video(3, cfg)


def _box(video, obj_id: int, frame: int) -> list[int]:
    ys, xs = np.nonzero(video.masks[frame] == obj_id)
    return [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def _offline(model, video, objects: dict, motion=SENSITIVE, **kwargs):
    """objects: obj_id -> prompt frame. Returns (masks per frame per object, session)."""
    predictor = VideoPredictor(model, fill_hole_area=0, progress=False, motion=motion)
    state = predictor.init_state(list(video.frames))
    results: dict = {}
    with torch.inference_mode():
        for obj_id, frame in sorted(objects.items(), key=lambda kv: kv[1]):
            if state.objects:  # track up to the new object's frame first, as a user would
                for f, ids, m in predictor.propagate_in_video(state, max_frame_num_to_track=frame):
                    results.setdefault(f, {}).update(zip(ids, m))
            predictor.add_new_points_or_box(state, frame, obj_id, box=_box(video, obj_id, frame))
        start = max(objects.values())
        for f, ids, m in predictor.propagate_in_video(state, start_frame_idx=start, **kwargs):
            results.setdefault(f, {}).update(zip(ids, m))
    return results, state


def test_default_is_off(fast_model, video):
    _, state = _offline(fast_model, video, {1: 0}, motion=None)
    outs = state.objects[1].non_cond_outputs.values()
    assert all(o.motion is None and o.motion_score is None for o in outs)
    # The predicted IoU is recorded without the option too (the best candidate's).
    assert all(o.iou_score is not None for o in outs)


def test_two_objects_each_as_alone(fast_model, video):
    both, state = _offline(fast_model, video, {1: 0, 2: 0})
    for obj_id in (1, 2):
        alone, alone_state = _offline(fast_model, video, {obj_id: 0})
        for f in range(len(video.frames)):
            assert torch.equal(both[f][obj_id], alone[f][obj_id]), f"frame {f} object {obj_id}"
        ours, ref = state.objects[obj_id].non_cond_outputs, alone_state.objects[obj_id]
        assert [o.candidate for o in ours.values()] == \
            [o.candidate for o in ref.non_cond_outputs.values()]
    # The option is not a no-op here: it changes some frame's choice or memory.
    plain, _ = _offline(fast_model, video, {1: 0, 2: 0}, motion=None)
    assert any(rel_err(both[f][1], plain[f][1]) > 1e-3 for f in plain)
    stable = [o.motion.stable_frames for o in state.objects[1].non_cond_outputs.values()]
    assert max(stable) >= SENSITIVE.stable_frames


def test_object_added_mid_video_starts_its_own_filter(fast_model, video):
    late = 9
    results, state = _offline(fast_model, video, {1: 0, 2: late})
    first, second = state.objects[1], state.objects[2]
    assert min(second.non_cond_outputs) == late + 1 and late in second.cond_outputs
    # The new object's filter starts on its first tracked frame ...
    assert second.non_cond_outputs[late + 1].motion.stable_frames == 1
    # ... while the first object's carries on, and neither is affected by the other.
    assert first.non_cond_outputs[late + 1].motion.stable_frames > 1
    alone, _ = _offline(fast_model, video, {2: late})
    for f in range(late, len(video.frames)):
        assert torch.equal(results[f][2], alone[f][2]), f"frame {f}"


def test_streaming_equals_offline_in_bounded_memory(fast_model, video):
    late = 9
    expected, offline_state = _offline(fast_model, video, {1: 0, 2: late})
    session = StreamingTracker(fast_model, fill_hole_area=0, motion=SENSITIVE).start(
        list(video.frames))
    session.add_box(1, _box(video, 1, 0))
    got, most_memories, signals = {}, 0, {}
    for frame in session:
        if frame.frame_idx == late:
            frame = session.add_box(2, _box(video, 2, late))
        got[frame.frame_idx] = dict(zip(frame.obj_ids, frame.masks))
        signals[frame.frame_idx] = session.frame_signals()
        most_memories = max(most_memories, session.retained_memories())
    last_signals = signals[len(video.frames) - 1][2]
    assert last_signals.motion == offline_state.objects[2].non_cond_outputs[23].motion_score
    for f, objects in expected.items():
        for obj_id, ref in objects.items():
            err = rel_err(got[f][obj_id], ref)
            assert err <= 1e-5, f"frame {f} object {obj_id}: {err:.2e}"
    # Per object: its prompted frame, at most num_maskmem - 1 chosen memories, the adjacent
    # and the current frame.
    assert most_memories <= 2 * (1 + fast_model.num_maskmem + 1)
    # The comparison covers a memory older than SAM 2's recency window, which the
    # streaming bank had to keep for it.
    last, n = len(video.frames) - 1, fast_model.num_maskmem
    read = motion_memory_frames(last, offline_state.objects[1].non_cond_outputs, SENSITIVE, n,
                                False, len(video.frames))
    assert min(t for _, t in read) < last - (n - 1)


def test_reverse_pass_and_correction_restart_the_filter(fast_model, video):
    predictor = VideoPredictor(fast_model, fill_hole_area=0, progress=False, motion=SENSITIVE)
    state = predictor.init_state(list(video.frames))
    with torch.inference_mode():
        predictor.add_new_points_or_box(state, 0, 1, box=_box(video, 1, 0))
        list(predictor.propagate_in_video(state))
        obj = state.objects[1]
        signals = predictor.frame_signals(state, 15)[1]
        out = obj.non_cond_outputs[15]
        assert signals.motion == out.motion_score and signals.motion is not None
        assert signals.iou == pytest.approx(float(out.iou_score[0]))
        assert signals.candidate == out.candidate
        assert signals.object_score == pytest.approx(float(out.object_score_logits))
        assert obj.non_cond_outputs[15].motion.reverse is False
        assert obj.non_cond_outputs[15].motion.stable_frames >= 2
        # Backwards from frame 15: the forward filter is not continued (wrong velocities).
        list(predictor.propagate_in_video(state, start_frame_idx=15, reverse=True,
                                          max_frame_num_to_track=4))
        restarted = obj.non_cond_outputs[15].motion
        assert (restarted.stable_frames, restarted.reverse) == (1, True)
        assert obj.non_cond_outputs[14].motion.stable_frames == 2
        assert obj.non_cond_outputs[14].motion.reverse is True
        # A correction click on a tracked frame restarts the filter from the new mask ...
        predictor.add_new_points_or_box(state, 20, 1, points=[[40, 40]], labels=[1])
        fixed = obj.pending_non_cond[20]
        assert fixed.motion.stable_frames == 1 and fixed.motion.reverse is None
        # ... and a refining click on it (two points: one mask) keeps that filter.
        predictor.add_new_points_or_box(state, 20, 1, points=[[50, 50]], labels=[0],
                                        clear_old_points=False)
        assert obj.pending_non_cond[20].motion is fixed.motion
        list(predictor.propagate_in_video(state, start_frame_idx=21, max_frame_num_to_track=1))
        assert obj.non_cond_outputs[21].motion.stable_frames == 2
