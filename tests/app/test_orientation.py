"""Phone videos and photos are shown, clicked and tracked upright, as viewers show them;
what was opened before keeps the grid its masks were made on."""

from __future__ import annotations

import io
import sqlite3

import av
import numpy as np
from PIL import Image

from conftest import require_data

from .conftest import app_client
from .test_api import label_map

STORED = 4  # frames in the phone clip


def _phone_clip(path) -> list[np.ndarray]:
    """Four bedroom frames (960x540) stored as a phone stores a portrait video: lying on
    their side, with a display matrix that turns them a quarter clockwise (-90 degrees).
    Returns the frames as decoded from the file, as stored."""
    clip = require_data("videos", "bedroom")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 960, 540, "yuv420p"
        stream.set_display_rotation(-90)
        for i in range(STORED):
            with Image.open(clip / f"{i:05d}.jpg") as image:
                frame = av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _served(client, vid: int, idx: int) -> np.ndarray:
    response = client.get(f"/api/videos/{vid}/frames/{idx}")
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(response.content)) as image:
        assert image.getexif().get(0x0112, 1) == 1  # no tag left for the browser to apply
        return np.asarray(image.convert("RGB"), dtype=np.float32)


def _open(client, path: str, **body) -> dict:
    video = client.post("/api/videos/open", json={"path": path, **body})
    assert video.status_code == 201, video.text
    vid = video.json()["id"]
    assert client.post(f"/api/videos/{vid}/objects", json={}).status_code == 201
    return video.json()


def _click(client, vid: int, x: int, y: int) -> np.ndarray:
    click = {"frame": 1, "object": 1, "points": [[x, y]], "labels": [1]}
    assert client.post(f"/api/videos/{vid}/prompts", json=click).status_code == 200
    return label_map(client, vid, 1)


def test_a_phone_video_is_shown_and_clicked_upright(client, root):
    stored = _phone_clip(root / "phone.mp4")
    upright = [np.rot90(frame, -1) for frame in stored]  # a quarter turn clockwise
    # The oracle: the same pixels, already upright, as a PNG frame folder (not turned).
    (root / "upright").mkdir()
    for i, frame in enumerate(upright):
        Image.fromarray(frame).save(root / "upright" / f"{i:05d}.png")

    video = _open(client, "phone.mp4")
    assert (video["width"], video["height"], video["num_frames"]) == (540, 960, STORED)
    shown = _served(client, video["id"], 2)
    assert shown.shape == (960, 540, 3)
    assert np.abs(shown - upright[2]).mean() < 4.0  # a JPEG of the upright frame
    oracle = _open(client, "upright")
    mask = _click(client, video["id"], 300, 400)
    assert mask.shape == (960, 540) and mask.any()
    np.testing.assert_array_equal(mask, _click(client, oracle["id"], 300, 400))

    with open(root / "phone.mp4", "rb") as f:
        upload = client.post("/api/videos/upload", files={"file": ("phone.mp4", f)})
    assert upload.status_code == 201, upload.text
    assert (upload.json()["width"], upload.json()["height"]) == (540, 960)


def test_turned_photos_are_shown_upright(client, root):
    """A JPEG whose EXIF orientation asks viewers to turn it (a phone photo) is read, shown
    and exported as viewers show it, as detection tools read their images (OpenCV's imread,
    detectron2 and Ultralytics apply the orientation); the page gets it re-encoded without
    the tag (Chromium would turn it a second time). A JPEG without one goes out as it is."""
    photos = root / "photos"
    photos.mkdir()
    with Image.open(require_data("images", "truck.jpg")) as image:
        truck = image.convert("RGB")  # 1800x1200
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers turn it 90 degrees clockwise
    truck.save(photos / "a_turned.jpg", exif=exif)
    truck.save(photos / "b_plain.jpg")
    vid = _open(client, "photos", kind="images")["id"]
    assert client.get(f"/api/videos/{vid}").json()["frame_sizes"] == [[1200, 1800],
                                                                      [1800, 1200]]
    for _ in range(2):  # the second answer comes from the cache
        pixels = _served(client, vid, 0)
        assert pixels.shape == (1800, 1200, 3)
        assert np.abs(pixels - np.rot90(np.asarray(truck), -1)).mean() < 4.0
    plain = client.get(f"/api/videos/{vid}/frames/1")
    assert plain.content == (photos / "b_plain.jpg").read_bytes()
    masks = client.get(f"/api/videos/{vid}/masks/0")
    with Image.open(io.BytesIO(masks.content)) as image:
        assert image.size == (1200, 1800)


def test_what_was_opened_before_keeps_its_grid(make_service, root):
    """A database written before frames were read upright has no `upright` column: its
    videos and photos go on being read as stored, so their masks still fit."""
    _phone_clip(root / "phone.mp4")
    photos = root / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (300, 200), (200, 30, 30)).save(photos / "turned.jpg", exif=exif)
    first = make_service()
    client = app_client(first)
    video = _open(client, "phone.mp4")["id"]
    images = _open(client, "photos", kind="images")["id"]
    first.close()
    # As the older masklet stored them: the stored size, no column.
    with sqlite3.connect(first.db.path) as db:
        db.execute("ALTER TABLE videos DROP COLUMN upright")
        db.execute("UPDATE videos SET width = 960, height = 540 WHERE id = ?", (video,))
        db.execute("UPDATE videos SET width = 300, height = 200, frame_sizes = '[[300, 200]]' "
                   "WHERE id = ?", (images,))

    client = app_client(make_service())
    assert _served(client, video, 0).shape == (540, 960, 3)
    assert _click(client, video, 400, 220).shape == (540, 960)
    assert _served(client, images, 0).shape == (200, 300, 3)
    fresh = _open(client, "phone.mp4")  # opened again now: upright
    assert (fresh["width"], fresh["height"]) == (540, 960)
