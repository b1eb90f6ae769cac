"""VideoPredictor behaviour beyond parity: video files, frame lists and bad input."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from conftest import require_data

from masklet import VideoPredictor, build_model, get_config
from masklet.io import VideoReadError
from masklet.predictor.prompts import PromptError
from masklet.tracking.session import UnknownObjectError


@pytest.fixture(scope="module")
def predictor() -> VideoPredictor:
    torch.manual_seed(0)
    model = build_model(get_config("sam2.1_hiera_tiny").with_image_size(256), random_weights=True)
    return VideoPredictor(model, progress=False)


def _decode(path, count: int) -> list[np.ndarray]:
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return frames


def _track(predictor, video, frames: int):
    state = predictor.init_state(video)
    predictor.add_new_points_or_box(state, 0, 1, points=[[640, 360]], labels=[1])
    predictor.add_new_points_or_box(state, 2, 2, box=[100, 100, 500, 400])
    return state, [m for _, _, m in predictor.propagate_in_video(
        state, max_frame_num_to_track=frames - 1)]


def test_mp4_equals_its_decoded_frames(predictor):
    path = require_data("videos", "dog.mp4")
    state, from_file = _track(predictor, str(path), 6)
    assert state.num_frames == 289 and (state.video_height, state.video_width) == (720, 1280)
    _, from_frames = _track(predictor, _decode(path, 289), 6)  # same length: same pointer window
    assert len(from_file) == len(from_frames) == 6
    for a, b in zip(from_file, from_frames):
        assert a.shape == (2, 1, 720, 1280)
        assert torch.equal(a, b)


def test_jpeg_folder_and_frame_list_agree(predictor, tmp_path):
    from PIL import Image

    folder = require_data("videos", "bedroom")
    frames = [np.asarray(Image.open(folder / f"{i:05d}.jpg").convert("RGB")) for i in range(4)]
    for i in range(4):
        (tmp_path / f"{i:05d}.jpg").symlink_to(folder / f"{i:05d}.jpg")
    _, a = _track(predictor, str(tmp_path), 4)
    _, b = _track(predictor, frames, 4)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.fixture()
def small_state(predictor):
    frames = [np.full((48, 64, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    return predictor.init_state(frames)


def test_unknown_object_id(predictor, small_state):
    predictor.add_new_points_or_box(small_state, 0, 1, points=[[10, 10]], labels=[1])
    with pytest.raises(UnknownObjectError, match="unknown object id 9.*\\[1\\]"):
        predictor.clear_all_prompts_in_frame(small_state, 0, 9)
    with pytest.raises(UnknownObjectError, match="unknown object id 9"):
        predictor.remove_object(small_state, 9)
    assert predictor.remove_object(small_state, 9, strict=False) == ([1], [])


def test_frame_index_out_of_range(predictor, small_state):
    with pytest.raises(IndexError, match="frame index 5 is out of range: the video has 5"):
        predictor.add_new_points_or_box(small_state, 5, 1, points=[[10, 10]], labels=[1])
    with pytest.raises(IndexError, match="out of range"):
        predictor.add_new_mask(small_state, -1, 1, np.ones((48, 64), bool))
    assert small_state.obj_ids == []  # nothing half-added


def test_point_outside_the_frame(predictor, small_state):
    with pytest.raises(PromptError, match="outside a 64x48"):
        predictor.add_new_points_or_box(small_state, 0, 1, points=[[70, 10]], labels=[1])
    with pytest.raises(PromptError, match="outside"):
        predictor.add_new_points_or_box(small_state, 0, 1, box=[0, 0, 10, 60])
    with pytest.raises(PromptError):
        predictor.add_new_points_or_box(small_state, 0, 1, points=[[1, 1]], labels=[7])
    assert small_state.obj_ids == []


def test_propagate_without_prompts(predictor, small_state):
    with pytest.raises(RuntimeError, match="no object has a prompt"):
        list(predictor.propagate_in_video(small_state))


def test_empty_folder(predictor, tmp_path):
    with pytest.raises(VideoReadError, match=str(tmp_path)):
        predictor.init_state(str(tmp_path))


def test_corrupt_and_non_video_files(predictor, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video")
    with pytest.raises(VideoReadError, match="notes.mp4"):
        predictor.init_state(str(text))
    src = require_data("videos", "coffee.mp4").read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(src[: len(src) // 3])
    with pytest.raises(VideoReadError, match="broken.mp4"):
        predictor.init_state(str(broken))
    with pytest.raises(VideoReadError, match="missing"):
        predictor.init_state(str(tmp_path / "missing.mp4"))


def test_objects_added_after_tracking_and_mask_shape(predictor, small_state):
    predictor.add_new_points_or_box(small_state, 0, 1, points=[[10, 10]], labels=[1])
    first = list(predictor.propagate_in_video(small_state))
    assert [f for f, _, _ in first] == list(range(5))
    _, ids, masks = predictor.add_new_points_or_box(small_state, 3, 5, points=[[30, 20]],
                                                    labels=[1])
    assert ids == [1, 5] and masks.shape == (2, 1, 48, 64) and masks.dtype == torch.float32
    again = list(predictor.propagate_in_video(small_state))
    assert all(m.shape == (2, 1, 48, 64) for _, _, m in again)
