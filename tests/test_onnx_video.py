"""The torch-free video predictor (masklet_runtime.video) against masklet's VideoPredictor.

tiny at 256 px with random weights (conftest's `tiny256_onnx`), on real bedroom frames:
prompts on three later frames (clicks refined, a second prompted frame, a box, a mask),
tracked forwards from the earliest prompted frame and then backwards to frame 0, every
result within 1e-5 of scale. Then the backward pass read in chunks, bounded memory on a
long video, and the errors.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from conftest import require_data
from reference import rel_err

from masklet.predictor.video import VideoPredictor
from masklet_runtime.graphs import Graphs
from masklet_runtime.prompts import PromptError
from masklet_runtime.sources import VideoReadError
from masklet_runtime.tracker import UnknownObjectError
from masklet_runtime.video import OnnxVideoPredictor

# Measured ~6e-7. A misplaced memory moves random-weight masks by 1e-5 to 1e-4 (see
# tests/test_onnx_tracker.py), so a looser bound would miss a wrong backward pass.
TIGHT = 1e-5
NUM_FRAMES = 10
HW = (540, 960)


# One intra-op thread (conftest): on a busy 2-core machine two threads contend.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bedroom(tmp_path_factory):
    src = require_data("videos", "bedroom")
    out = tmp_path_factory.mktemp("bedroom10")
    for i in range(NUM_FRAMES):
        os.symlink(src / f"{i:05d}.jpg", out / f"{i:05d}.jpg")
    return out


MASK = np.zeros(HW, dtype=bool)
MASK[300:500, 600:900] = True
# (frame, object, points, labels, box, clear_old_points) or (frame, object, mask): object 1
# clicked and refined on frame 3 and clicked again on frame 7, object 2 boxed on frame 6,
# object 3 given as a mask on frame 8. Objects 2 and 3 show from frame 0 on, tracked
# backwards from their later prompted frames.
PROMPTS = [
    (3, 1, [[480, 270]], [1], None, True),
    (3, 1, [[600, 300]], [0], None, False),
    (6, 2, None, None, [100, 100, 400, 350], True),
    (8, 3, MASK),
    (7, 1, [[700, 200]], [1], None, True),
]
FIRST = 3
ORDER = [*range(FIRST, NUM_FRAMES), *range(FIRST, -1, -1)]


def _add_torch(predictor, state) -> None:
    for p in PROMPTS:
        if len(p) == 3:
            predictor.add_new_mask(state, *p)
        else:
            frame, obj, points, labels, box, clear = p
            predictor.add_new_points_or_box(state, frame, obj, points=points, labels=labels,
                                            box=box, clear_old_points=clear)


def _add_onnx(video) -> None:
    for p in PROMPTS:
        if len(p) == 3:
            video.add_mask(*p)
        else:
            frame, obj, points, labels, box, clear = p
            video.add_points(frame, obj, points, labels, box=box, clear_old_points=clear)


def _run_onnx(export_dir, video, **options) -> list:
    clip = OnnxVideoPredictor(export_dir, intra_op_threads=1, **options).open(video)
    _add_onnx(clip)
    assert clip.propagation_length() == len(ORDER)
    return [(f, ids, np.asarray(m)) for f, ids, m in clip.propagate()]


def _run_torch(model, video, add_prompts) -> list:
    """masklet's VideoPredictor: forwards from the earliest prompted frame, then backwards
    (as `masklet video` runs it)."""
    predictor = VideoPredictor(model, fill_hole_area=8, progress=False)
    results = []
    with torch.inference_mode():
        state = predictor.init_state(video)
        add_prompts(predictor, state)
        for reverse in (False, True):
            for frame_idx, obj_ids, logits in predictor.propagate_in_video(state,
                                                                           reverse=reverse):
                results.append((frame_idx, list(obj_ids), logits.numpy().copy()))
    return results


@pytest.fixture(scope="module")
def reference(tiny256_onnx, bedroom):
    return _run_torch(tiny256_onnx[0], str(bedroom), _add_torch)


@pytest.fixture(scope="module")
def onnx_run(tiny256_onnx, bedroom):
    return _run_onnx(tiny256_onnx[1], str(bedroom))


def _worst(got: list, expected: list, hw: tuple[int, int] = HW) -> float:
    assert [(f, ids) for f, ids, _ in got] == [(f, ids) for f, ids, _ in expected]
    worst = 0.0
    for (frame_idx, obj_ids, masks), (_, _, ref) in zip(got, expected, strict=True):
        assert masks.shape == ref.shape == (len(obj_ids), 1, *hw)
        for k, obj_id in enumerate(obj_ids):
            # Random weights, but objects are there: a comparison of empty masks says little.
            assert (ref[k] > 0).mean() > 0.05, (frame_idx, obj_id)
            worst = max(worst, rel_err(masks[k], ref[k]))
    return worst


@pytest.mark.parametrize("batched", [False, True], ids=["one-object-per-call", "batched"])
def test_equals_video_predictor(reference, onnx_run, tiny256_onnx, bedroom, batched,
                                monkeypatch):
    assert [f for f, _, _ in reference] == ORDER
    assert reference[0][1] == [1, 2, 3]  # the order the objects were first prompted
    if batched:
        monkeypatch.setattr(Graphs, "on_cpu", lambda self, name: False)
        got = _run_onnx(tiny256_onnx[1], str(bedroom))
    else:
        got = onnx_run
    worst = _worst(got, reference)
    print(f"\nmax relative error over {len(ORDER)} results x 3 objects: {worst:.1e}")
    assert worst <= TIGHT
    # The backward pass redoes the earliest prompted frame for the objects tracked on it.
    forward3, backward3 = got[0][2], got[NUM_FRAMES - FIRST][2]
    assert np.array_equal(forward3[0], backward3[0])  # object 1: its prompted output
    assert rel_err(forward3[1], backward3[1]) > 1e-3  # object 2: tracked again, backwards


@pytest.mark.slow
def test_edgetam_export_equals_video_predictor(edgetam256_onnx, bedroom):
    """The same prompts on a real EdgeTAM export: its memories are the perceiver's latents,
    read backwards as forwards."""
    model, folder = edgetam256_onnx
    expected = _run_torch(model, str(bedroom), _add_torch)
    worst = _worst(_run_onnx(folder, str(bedroom)), expected)
    print(f"\nEdgeTAM export: max relative error {worst:.1e}")
    assert worst <= TIGHT


# Corrections after a first propagation: object 1 (clicked on frame 3) gets a negative
# click on frame 6 (reached forwards), object 2 (boxed on frame 6) a mask on frame 8, and
# object 1 a click on frame 2 (reached backwards) and then a second one added to it.
CORRECTIONS = [
    (6, 1, [[560, 300]], [0], True),
    (8, 2, MASK),
    (2, 1, [[300, 260]], [1], True),
    (2, 1, [[820, 120]], [0], False),
]


def _correct_onnx(clip, corrections) -> None:
    for c in corrections:
        if len(c) == 3:
            clip.add_mask(*c)
        else:
            frame, obj, points, labels, clear = c
            clip.add_points(frame, obj, points, labels, clear_old_points=clear)


def _run_torch_corrected(model, video) -> list:
    """masklet's VideoPredictor taking each correction when its propagation reaches the
    frame: propagate up to it, correct it (the result replaces the frame's tracked one),
    propagate on from the next frame."""
    predictor = VideoPredictor(model, fill_hole_area=8, progress=False)
    results = []

    def propagate(start, stop, reverse):  # start..stop inclusive
        for f, ids, logits in predictor.propagate_in_video(
                state, start_frame_idx=start, max_frame_num_to_track=abs(stop - start),
                reverse=reverse):
            results.append((f, list(ids), logits.numpy().copy()))

    def correct(c):
        if len(c) == 3:
            f, ids, logits = predictor.add_new_mask(state, *c)
        else:
            frame, obj, points, labels, clear = c
            f, ids, logits = predictor.add_new_points_or_box(
                state, frame, obj, points=points, labels=labels, clear_old_points=clear)
        if results[-1][0] == f:
            results.pop()  # the frame as tracked, before its correction
        results.append((f, list(ids), logits.numpy().copy()))

    with torch.inference_mode():
        state = predictor.init_state(video)
        _add_torch(predictor, state)
        propagate(FIRST, 6, False)
        correct(CORRECTIONS[0])
        propagate(7, 8, False)
        correct(CORRECTIONS[1])
        propagate(9, 9, False)
        propagate(FIRST, 2, True)
        correct(CORRECTIONS[2])
        correct(CORRECTIONS[3])
        propagate(1, 0, True)
    return results


def test_corrections_after_a_propagation(tiny256_onnx, bedroom, onnx_run):
    """Prompts added after a propagation on frames where their object was tracked refine
    it there (decoded with its memory and tracked mask, then remembered) when the next
    propagation reaches the frame: the masks equal VideoPredictor's taking each correction
    mid-propagation. Cleared, they leave the first propagation's masks."""
    clip = OnnxVideoPredictor(tiny256_onnx[1], intra_op_threads=1).open(str(bedroom))
    _add_onnx(clip)
    first = [(f, ids, np.asarray(m)) for f, ids, m in clip.propagate()]
    for (_, _, mine), (_, _, ref) in zip(first, onnx_run, strict=True):
        assert np.array_equal(mine, ref)
    _correct_onnx(clip, CORRECTIONS)
    assert clip.propagation_length() == len(ORDER)
    second = [(f, ids, np.asarray(m)) for f, ids, m in clip.propagate()]

    expected = _run_torch_corrected(tiny256_onnx[0], str(bedroom))
    assert [f for f, _, _ in expected] == ORDER
    worst = _worst(second, expected)
    print(f"\nwith corrections: max relative error {worst:.1e}")
    assert worst <= TIGHT
    # The corrections changed the masks: on their frames and on the frames after them in
    # their pass (object 1 forwards from 6 and backwards from 2, object 2 from 8).
    for pos, obj in [(3, 0), (6, 0), (5, 1), (6, 1), (NUM_FRAMES - FIRST + 1, 0),
                     (len(ORDER) - 1, 0)]:
        assert second[pos][0] == first[pos][0]
        assert rel_err(second[pos][2][obj], first[pos][2][obj]) > 1e-2, (pos, obj)
    # ... and nothing before them in the pass: frames 3..5 forwards, object 2 before 8.
    for pos in range(3):
        assert np.array_equal(second[pos][2], first[pos][2])
    assert np.array_equal(second[4][2][1], first[4][2][1])

    # Cleared, the corrections are gone: the first propagation's masks again.
    for frame, obj in [(6, 1), (8, 2), (2, 1)]:
        clip.clear_prompts(frame, obj)
    fourth = [np.asarray(m) for _, _, m in clip.propagate()]
    for mine, (_, _, ref) in zip(fourth, first, strict=True):
        assert np.array_equal(mine, ref)


def test_remove_object_and_clear_prompts(tiny256_onnx, bedroom, onnx_run):
    """Object 3 removed and object 1's prompt on frame 7 cleared: tracked as if they had
    never been given. An object left without a prompt, or an unknown id, is refused. A new
    object's prompt is a prompt, wherever other objects were tracked."""
    clip = OnnxVideoPredictor(tiny256_onnx[1], intra_op_threads=1).open(str(bedroom))
    _add_onnx(clip)
    clip.remove_object(3)
    clip.clear_prompts(7, 1)
    assert clip.obj_ids == [1, 2]
    got = [(f, ids, np.asarray(m)) for f, ids, m in clip.propagate()]

    fresh = OnnxVideoPredictor(tiny256_onnx[1], intra_op_threads=1).open(str(bedroom))
    for frame, obj, points, labels, box, clear in PROMPTS[:3]:
        fresh.add_points(frame, obj, points, labels, box=box, clear_old_points=clear)
    expected = [(f, ids, np.asarray(m)) for f, ids, m in fresh.propagate()]
    assert [(f, ids) for f, ids, _ in got] == [(f, ids) for f, ids, _ in expected]
    assert got[0][1] == [1, 2]
    for (_, _, mine), (_, _, ref) in zip(got, expected, strict=True):
        assert np.array_equal(mine, ref)
    assert rel_err(got[4][2][0], onnx_run[4][2][0]) > 1e-2  # frame 7 had object 1's click

    with pytest.raises(UnknownObjectError, match=r"unknown object id 3; the video has "
                                                 r"objects \[1, 2\]"):
        clip.remove_object(3)
    with pytest.raises(UnknownObjectError):
        clip.clear_prompts(0, 3)
    with pytest.raises(IndexError, match="out of range"):
        clip.clear_prompts(10, 1)
    clip.clear_prompts(6, 2)  # object 2's only prompt
    with pytest.raises(PromptError, match=r"object 2 has no prompt left: prompt it again or "
                                          r"remove it \(remove_object\(2\)\)"):
        next(clip.propagate())
    clip.remove_object(2)
    assert clip.propagation_length() == len(ORDER)
    # An object first prompted after a propagation was never tracked: its prompt on frame
    # 0 (where object 1 was) is a prompted frame, so tracking now starts there.
    clip.add_points(0, 4, [[470, 280]], [1])
    assert clip.obj_ids == [1, 4]
    assert clip.propagation_length() == NUM_FRAMES


def test_backward_pass_in_chunks_is_the_same(onnx_run, tiny256_onnx, bedroom):
    """Two decoded frames at a time (frames 2-3, then 0-1, each read from the start)."""
    two_frames = 2 * HW[0] * HW[1] * 3
    got = _run_onnx(tiny256_onnx[1], str(bedroom), reverse_chunk_bytes=two_frames, prefetch=0)
    assert [(f, ids) for f, ids, _ in got] == [(f, ids) for f, ids, _ in onnx_run]
    for (_, _, mine), (_, _, ref) in zip(got, onnx_run, strict=True):
        assert np.array_equal(mine, ref)


def test_long_video_bounded_and_equal(tiny256_onnx):
    """40 bedroom frames at 240x135, one object clicked on frame 20. The predictor holds
    its prompted frame, what the next frames of the pass read (6 memories, 15 pointers)
    and, during the forward pass, the 15 outputs after frame 20 that the backward pass
    starts from; what it forgets is never read again: the masks equal masklet's
    VideoPredictor's, which keeps everything."""
    from PIL import Image

    src = require_data("videos", "bedroom")
    frames = np.stack([np.asarray(Image.open(src / f"{i:05d}.jpg").convert("RGB")
                                  .resize((240, 135), Image.BILINEAR)) for i in range(40)])
    clip = OnnxVideoPredictor(tiny256_onnx[1], intra_op_threads=1).open(frames)
    clip.add_points(20, 1, [[120, 70]], [1])
    got, counts = [], []
    for frame_idx, obj_ids, masks in clip.propagate():
        got.append((frame_idx, obj_ids, np.asarray(masks)))
        counts.append((clip.retained_memories(), clip.retained_outputs()))
    assert [f for f, _, _ in got] == [*range(20, 40), *range(20, -1, -1)]
    forward, backward = counts[:20], counts[20:]
    # Forward, at frame 39: the prompted frame, frames 21..35 kept whole, and what the
    # next frame reads: the memories of 33..39 and the pointers of 25..39.
    kept = set(range(21, 36))
    assert max(forward) == forward[-1] == (1 + len(kept | set(range(33, 40))),
                                           1 + len(kept | set(range(25, 40))))
    # Backward: from frame 5 on (15 frames below 21) only the prompted frame and the
    # window are held.
    assert got[20 + 15][0] == 5
    assert max(backward[15:]) == backward[-1] == (1 + 7, 1 + 16)

    expected = _run_torch(
        tiny256_onnx[0], list(frames),
        lambda predictor, state: predictor.add_new_points_or_box(state, 20, 1,
                                                                 points=[[120, 70]], labels=[1]))
    assert _worst(got, expected, (135, 240)) <= TIGHT


def test_stopping_early_stops_reading(tiny256_onnx, bedroom):
    """A propagation left after its first result (the generator closed) stops its
    read-ahead thread."""
    def readers():
        return {t for t in threading.enumerate() if t.name == "masklet-runtime-prefetch"}

    before = readers()
    clip = OnnxVideoPredictor(tiny256_onnx[1], intra_op_threads=1).open(str(bedroom))
    clip.add_points(0, 1, [[480, 270]], [1])
    results = clip.propagate()
    assert next(results).frame_idx == 0
    started = readers() - before
    assert len(started) == 1
    results.close()
    assert not any(t.is_alive() for t in started)


def test_bad_input(tiny256_onnx, bedroom):
    predictor = OnnxVideoPredictor(tiny256_onnx[1], intra_op_threads=1)
    with pytest.raises(VideoReadError, match="more than once"):
        predictor.open(iter(np.zeros((3, 8, 8, 3), np.uint8)))
    with pytest.raises(VideoReadError, match="no such file"):
        predictor.open(str(bedroom / "missing"))
    with pytest.raises(ValueError, match="reverse_chunk_bytes"):
        OnnxVideoPredictor(tiny256_onnx[1], reverse_chunk_bytes=0)
    clip = predictor.open(str(bedroom))
    with pytest.raises(PromptError, match="no object has a prompt"):
        next(clip.propagate())
    with pytest.raises(IndexError, match="frame index 10 is out of range: the video has 10"):
        clip.add_points(10, 1, [[1, 1]], [1])
    with pytest.raises(TypeError, match="frame_idx must be an int"):
        clip.add_points(1.5, 1, [[1, 1]], [1])
    with pytest.raises(PromptError, match="outside"):
        clip.add_points(0, 1, [[2000, 1]], [1])
    with pytest.raises(PromptError, match="2-D"):
        clip.add_mask(0, 1, np.zeros((2, 3, 4)))
    with pytest.raises(TypeError, match="obj_id must be an int"):
        clip.add_box(0, "a", [1, 1, 5, 5])
    assert clip.obj_ids == []  # refused prompts leave nothing behind
