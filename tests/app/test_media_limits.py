"""A frame of too many pixels (a small file can hold one of gigabytes) is refused with a
one-line 413 before it is decoded, whichever way it arrives."""

from __future__ import annotations

import io

from PIL import Image

from .conftest import counts

BIG = (20000, 10000)  # 200 million pixels: above the app's 178 million


def _big_png() -> bytes:
    """A 20000x10000 one-bit PNG: 200 million pixels in about 25 KB."""
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        out = io.BytesIO()
        Image.new("1", BIG).save(out, format="PNG", optimize=True)
        return out.getvalue()
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _one_line_413(response, name: str) -> None:
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    assert detail.startswith(f"{name}: ") and "more pixels than the app reads in one frame" \
        in detail, detail


def test_frames_of_too_many_pixels_are_refused(client, svc, root):
    """As a photo (alone or in an image set), as a one-frame video (PyAV decodes a PNG
    without Pillow's limit) and as an upload: 413 naming the file, nothing stored, and
    the server keeps serving."""
    data = _big_png()
    assert len(data) < 100_000
    (root / "big").mkdir()
    (root / "big" / "huge.png").write_bytes(data)
    before = counts(svc)
    for body in ({"path": "big/huge.png"}, {"path": "big/huge.png", "kind": "video"},
                 {"path": "big", "kind": "images"}):
        _one_line_413(client.post("/api/videos/open", json=body), "huge.png")
    upload = client.post("/api/videos/upload", files={"file": ("holiday.png", data)})
    _one_line_413(upload, "holiday.png")
    assert counts(svc) == before
    assert client.post("/api/videos/open", json={"path": "clip"}).status_code == 201


def test_a_frame_replaced_by_one_of_too_many_pixels(client, root):
    """A photo replaced after its set was opened (same name, the PNG's bytes): showing it
    and clicking on it answer 413 (showing it was a 500)."""
    (root / "set").mkdir()
    photo = root / "set" / "a.jpg"
    Image.new("RGB", (64, 48), (90, 120, 30)).save(photo)
    vid = client.post("/api/videos/open", json={"path": "set", "kind": "images"}).json()["id"]
    assert client.post(f"/api/videos/{vid}/objects", json={}).status_code == 201
    photo.write_bytes(_big_png())
    _one_line_413(client.get(f"/api/videos/{vid}/frames/0"), "a.jpg")
    click = {"frame": 0, "object": 1, "points": [[10, 10]], "labels": [1]}
    _one_line_413(client.post(f"/api/videos/{vid}/prompts", json=click), "a.jpg")
