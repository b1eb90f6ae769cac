"""Synthetic video generator: determinism, content guarantees and mask / pixel agreement."""

from __future__ import annotations

import time

import numpy as np
import pytest

from masklet.data.synthetic import SyntheticVideoConfig, generate_video
from masklet.data.synthetic_shapes import Shape, random_shape

SEEDS = range(6)


def test_same_seed_same_video_and_seeds_differ():
    first, again, other = generate_video(5), generate_video(5), generate_video(6)
    for name in ("frames", "masks", "visibility", "amodal_masks", "distractor_masks", "background"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert first.distractor_sources == again.distractor_sources
    assert not np.array_equal(first.frames, other.frames)
    assert not np.array_equal(first.masks, other.masks)


def test_shapes_dtypes_and_speed():
    config = SyntheticVideoConfig(
        num_frames=8, height=256, width=256, num_objects=3, num_distractors=2
    )
    generate_video(0, config)
    # CPU time of this process, so that other jobs on the machine do not make it flaky.
    start = time.process_time()
    video = generate_video(1, config)
    elapsed = time.process_time() - start
    assert elapsed < 0.5, f"8 frames at 256x256 took {elapsed:.2f}s of CPU"
    assert video.frames.shape == (8, 256, 256, 3) and video.frames.dtype == np.uint8
    assert video.masks.shape == (8, 256, 256) and video.masks.dtype == np.int32
    assert video.visibility.shape == (8, 3) and video.amodal_masks.shape == (8, 3, 256, 256)
    assert video.distractor_masks.shape == (8, 2, 256, 256)
    assert video.object_ids == (1, 2, 3)
    assert set(np.unique(video.masks).tolist()) <= {0, 1, 2, 3}
    assert all(1 <= s <= 3 for s in video.distractor_sources)


def test_non_square_and_single_frame():
    video = generate_video(
        3, SyntheticVideoConfig(num_frames=1, height=48, width=80, num_reentering=0)
    )
    assert video.frames.shape == (1, 48, 80, 3)
    assert (video.visibility > 0).any()


@pytest.mark.parametrize("seed", SEEDS)
def test_objects_leave_and_reenter(seed):
    video = generate_video(seed, SyntheticVideoConfig(num_objects=3, num_reentering=2))
    assert len(video.reentering_ids) == 2
    for obj in video.reentering_ids:
        seen = video.visibility[:, obj - 1] > 0
        gone = np.flatnonzero(~seen)
        assert seen[0] and seen[-1] and gone.size > 0
        # Gone means entirely outside the frame, not hidden behind something.
        assert not video.amodal_masks[gone, obj - 1].any()


@pytest.mark.parametrize("seed", SEEDS)
def test_objects_occlude_each_other(seed):
    video = generate_video(seed)
    hidden_by_object = False
    for t in range(video.masks.shape[0]):
        for i in video.object_ids:
            covered = video.amodal_masks[t, i - 1] & (video.masks[t] != i)
            hidden_by_object |= bool((covered & (video.masks[t] > 0)).any())
    assert hidden_by_object
    assert (video.visibility < 1).any()


@pytest.mark.parametrize("seed", SEEDS)
def test_masks_match_rendered_pixels(seed):
    video = generate_video(seed, SyntheticVideoConfig(noise_std=0.0, num_distractors=2))
    drawn = (video.frames != video.background).any(axis=-1)
    covered = (video.masks > 0) | video.distractor_masks.any(axis=1)
    # Every changed pixel belongs to an object or a distractor, and (textures being
    # distinct from the background) nearly every object pixel is changed.
    assert not (drawn & ~covered).any()
    object_pixels = video.masks > 0
    assert drawn[object_pixels].mean() > 0.95
    # Visible masks are the amodal masks minus what is in front; distractors never carry ids.
    for i in video.object_ids:
        visible = video.masks == i
        assert not (visible & ~video.amodal_masks[:, i - 1]).any()
        counts = visible.sum(axis=(1, 2))
        np.testing.assert_array_equal(counts > 0, video.visibility[:, i - 1] > 0)
    assert not (video.distractor_masks.any(axis=1) & object_pixels).any()
    assert (video.visibility <= 1).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_distractors_copy_their_source_look(seed):
    video = generate_video(
        seed, SyntheticVideoConfig(noise_std=0.0, num_objects=2, num_distractors=1)
    )
    source = video.distractor_sources[0]
    distractor_colours = video.frames[video.distractor_masks[:, 0]]
    assert len(distractor_colours) > 0

    def shared_fraction(obj):
        palette = {tuple(c) for c in video.frames[video.masks == obj].tolist()}
        return np.mean([tuple(c) in palette for c in distractor_colours.tolist()])

    # Same texture: most distractor pixels show colours the source object also shows.
    assert shared_fraction(source) > 0.5 > shared_fraction(3 - source)


def test_shapes_stay_within_unit_radius():
    rng = np.random.default_rng(0)
    angles = np.linspace(-np.pi, np.pi, 2001)
    kinds = set()
    for _ in range(60):
        shape = random_shape(rng)
        kinds.add(shape.kind)
        radius = shape.radius(angles)
        assert (radius <= 1 + 1e-9).all() and (radius > 0.2).all()
    assert kinds == {"ellipse", "blob", "polygon"}
    square = Shape("polygon", (-3 * np.pi / 4, -np.pi / 4, np.pi / 4, 3 * np.pi / 4, 1, 1, 1, 1))
    assert square.radius(np.array([0.0]))[0] == pytest.approx(np.sqrt(0.5))
    assert square.inner_radius() == pytest.approx(np.sqrt(0.5), abs=1e-6)


def test_config_validation():
    with pytest.raises(ValueError):
        SyntheticVideoConfig(num_objects=0)
    with pytest.raises(ValueError):
        SyntheticVideoConfig(num_objects=1, num_reentering=2)
    with pytest.raises(ValueError):
        SyntheticVideoConfig(num_frames=2, num_reentering=1)
    with pytest.raises(ValueError):
        SyntheticVideoConfig(min_radius=0.3, max_radius=0.2)


def _median_step(video, label: int) -> float:
    """Median per-frame displacement (px) of an object's mask centroid while visible."""
    centres = [np.argwhere(m == label).mean(0) for m in video.masks if (m == label).any()]
    return float(np.median(np.linalg.norm(np.diff(np.array(centres), axis=0), axis=1)))


def test_motion_slows_objects_down():
    fast = generate_video(11, SyntheticVideoConfig(num_frames=24, num_reentering=0))
    slow = generate_video(11, SyntheticVideoConfig(num_frames=24, num_reentering=0, motion=0.25))
    for label in (1, 2, 3):
        assert _median_step(slow, label) < 0.5 * _median_step(fast, label)
    still = generate_video(11, SyntheticVideoConfig(num_frames=6, num_reentering=0, motion=0))
    assert _median_step(still, 1) < 3.0  # only scale and rotation jitter move the centroid
    with pytest.raises(ValueError, match="motion"):
        SyntheticVideoConfig(motion=1.5)
