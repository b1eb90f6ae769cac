"""API routes (opening, frames, prompts, objects) with good and bad input: bad input must
answer 4xx and store nothing (mask import, tracking, image sets, metrics: test_api_tracking.py)."""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image

from conftest import require_data

from .conftest import counts

CLICK = {"frame": 0, "object": 1, "points": [[400, 220]], "labels": [1]}


def opened(client, path: str = "clip") -> int:
    """Open `path` (relative to the root) and add object 1; returns the video id."""
    video = client.post("/api/videos/open", json={"path": path})
    assert video.status_code == 201, video.text
    vid = video.json()["id"]
    assert client.post(f"/api/videos/{vid}/objects", json={}).status_code == 201
    return vid


def refused(client, svc, method: str, url: str, status: int, **kwargs) -> str:
    """Send a bad request: it must answer `status` with a detail and change nothing."""
    before = counts(svc)
    response = client.request(method, url, **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert detail
    assert counts(svc) == before
    return detail if isinstance(detail, str) else str(detail)


def label_map(client, vid: int, frame: int) -> np.ndarray:
    response = client.get(f"/api/videos/{vid}/masks/{frame}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return np.array(Image.open(io.BytesIO(response.content)))


# ------------------------------------------------------------------ info, browse
def test_info_and_page(client, root):
    info = client.get("/api/info").json()
    assert info["image_size"] == 256 and info["roots"] == [str(root.resolve())]
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert client.get("/api.js").status_code == 200


def test_browse(client, svc, root):
    top = client.get("/api/browse").json()
    assert top["path"] is None and top["entries"][0]["path"] == str(root.resolve())
    inside = client.get("/api/browse", params={"path": str(root)}).json()
    assert inside["parent"] is None
    assert {"name": "clip", "type": "dir", "frames": 8}.items() <= inside["entries"][0].items()
    refused(client, svc, "GET", "/api/browse", 403, params={"path": "/etc"})
    refused(client, svc, "GET", "/api/browse", 403, params={"path": "clip/../.."})


# ------------------------------------------------------------------- opening
def test_open_path_and_detail(client, svc):
    vid = opened(client)
    detail = client.get(f"/api/videos/{vid}").json()
    assert detail["kind"] == "video" and detail["num_frames"] == 8
    assert (detail["width"], detail["height"]) == (960, 540)
    assert [o["id"] for o in detail["objects"]] == [1] and detail["track"] is None
    assert not detail["can_undo"] and not detail["can_redo"]
    assert [v["id"] for v in client.get("/api/videos").json()["videos"]] == [vid]


def test_open_refuses_paths_outside_the_roots(client, svc, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    for path in ("/etc", "../outside", "clip/../../outside", "escape", str(outside)):
        assert "outside" in refused(client, svc, "POST", "/api/videos/open", 403,
                                    json={"path": path}) or "'..'" in path
    refused(client, svc, "POST", "/api/videos/open", 404, json={"path": "missing"})
    (root / "notes.txt").write_text("not a video")
    refused(client, svc, "POST", "/api/videos/open", 415, json={"path": "notes.txt"})
    refused(client, svc, "POST", "/api/videos/open", 422, json={"path": "clip", "kind": "x"})


def test_upload_video_and_image(client, svc):
    mp4 = require_data("videos", "coffee.mp4")
    with open(mp4, "rb") as f:
        video = client.post("/api/videos/upload", files={"file": ("cup.mp4", f, "video/mp4")})
    assert video.status_code == 201, video.text
    assert video.json()["num_frames"] == 287 and video.json()["name"] == "cup"
    frame = client.get(f"/api/videos/{video.json()['id']}/frames/286")
    assert frame.status_code == 200
    assert Image.open(io.BytesIO(frame.content)).size == (1280, 720)
    photo = require_data("images", "groceries.jpg").read_bytes()
    image = client.post("/api/videos/upload", files={"file": ("x.bin", photo)}).json()
    assert image["kind"] == "images" and image["num_frames"] == 1
    assert counts(svc)["uploads"] == 2 and counts(svc)["tmp"] == 0


def test_upload_refusals(make_service, tmp_path):
    from .conftest import app_client

    svc = make_service(max_upload_mb=0.05)
    client = app_client(svc)
    url = "/api/videos/upload"
    assert "not a readable" in refused(client, svc, "POST", url, 415,
                                       files={"file": ("movie.mp4", b"just text " * 100)})
    big = require_data("images", "truck.jpg").read_bytes()  # 271 KB > 50 KB
    refused(client, svc, "POST", url, 413, files={"file": ("truck.jpg", big)})

    def chunked():  # no Content-Length: the limit holds while the body streams in
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
        yield from (b"x" * 1024 for _ in range(200))
        yield b"\r\n--b--\r\n"

    assert "limit of 0.05 MB" in refused(
        client, svc, "POST", url, 413, content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=b"})
    refused(client, svc, "POST", url, 400, files={"other": ("a.jpg", b"x")})
    refused(client, svc, "POST", url, 400, files={"file": ("empty.mp4", b"")})
    refused(client, svc, "POST", url, 400, json={"file": "x"})
    truncated = require_data("videos", "coffee.mp4").read_bytes()[:40_000]
    refused(client, svc, "POST", url, 415, files={"file": ("cut.mp4", truncated)})


def test_rename_and_delete_video(client, svc):
    vid = opened(client)
    renamed = client.patch(f"/api/videos/{vid}", json={"name": " my  clip "}).json()
    assert renamed["name"] == "my clip"
    refused(client, svc, "PATCH", f"/api/videos/{vid}", 400, json={"name": "  "})
    refused(client, svc, "PATCH", "/api/videos/99", 404, json={"name": "x"})
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    assert client.delete(f"/api/videos/{vid}").status_code == 204
    assert all(counts(svc)[t] == 0 for t in ("videos", "objects", "actions", "masks"))
    refused(client, svc, "GET", f"/api/videos/{vid}", 404)


# ----------------------------------------------------------- frames and masks
def test_frames_masks_and_range(client, svc):
    vid = opened(client)
    jpeg = client.get(f"/api/videos/{vid}/frames/7")
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert label_map(client, vid, 0).shape == (540, 960) and not label_map(client, vid, 0).any()
    for url in (f"/api/videos/{vid}/frames/8", f"/api/videos/{vid}/frames/-1",
                f"/api/videos/{vid}/masks/8", f"/api/videos/{vid}/masks/8/rle"):
        assert "out of range" in refused(client, svc, "GET", url, 404)
    refused(client, svc, "GET", f"/api/videos/{vid}/prompts?frame=8", 404)
    refused(client, svc, "POST", f"/api/videos/{vid}/frames/8/prepare", 404)
    refused(client, svc, "POST", f"/api/videos/{vid}/prompts", 404, json={**CLICK, "frame": 8})
    refused(client, svc, "GET", "/api/videos/42/frames/0", 404)


def test_click_reuses_the_frames_features(client, svc, monkeypatch):
    vid = opened(client)
    model = svc.host.model
    calls = []
    original = model.forward_image
    monkeypatch.setattr(model, "forward_image", lambda x: calls.append(1) or original(x))
    assert client.post(f"/api/videos/{vid}/frames/3/prepare").json()["cached"]
    encoded = len(calls)
    assert encoded >= 1  # frame 3 (and frame 0, when the runtime was opened)
    for x in (400, 420, 300):
        response = client.post(f"/api/videos/{vid}/prompts",
                               json={**CLICK, "frame": 3, "points": [[x, 220]]})
        assert response.status_code == 200
    assert len(calls) == encoded  # three clicks, no new image encoding


# ------------------------------------------------------------------- prompts
def test_click_box_and_prompt_list(client, svc):
    vid = opened(client)
    first = client.post(f"/api/videos/{vid}/prompts", json=CLICK).json()
    assert first["frame"] == 0 and first["mask_png"].startswith("data:image/png;base64,")
    stored = svc.db.query("SELECT * FROM masks WHERE video_id = ?", (vid,))
    assert len(stored) == 1 and stored[0]["source"] == "prompt"
    assert (label_map(client, vid, 0) == 1).sum() == stored[0]["area"]
    neg = {**CLICK, "points": [[100, 100]], "labels": [0]}
    client.post(f"/api/videos/{vid}/prompts", json=neg)
    listed = client.get(f"/api/videos/{vid}/prompts", params={"frame": 0}).json()["prompts"]
    assert [p["labels"] for p in listed] == [[1], [0]]
    box = client.post(f"/api/videos/{vid}/prompts",
                      json={"frame": 0, "object": 1, "box": [300, 0, 520, 400]})
    assert box.status_code == 200
    listed = client.get(f"/api/videos/{vid}/prompts").json()["prompts"]
    assert [p["kind"] for p in listed] == ["box"]  # a box starts the frame's prompts afresh
    assert svc.db.query_one("SELECT COUNT(*) FROM actions")[0] == 3


def test_bad_prompts_store_nothing(client, svc):
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    url = f"/api/videos/{vid}/prompts"
    assert "no object 7" in refused(client, svc, "POST", url, 404, json={**CLICK, "object": 7})
    assert "outside" in refused(client, svc, "POST", url, 400,
                                json={**CLICK, "points": [[961, 10]]})
    refused(client, svc, "POST", url, 400, json={**CLICK, "labels": [1, 0]})
    refused(client, svc, "POST", url, 400, json={**CLICK, "labels": [2]})
    refused(client, svc, "POST", url, 400, json={"frame": 0, "object": 1})
    refused(client, svc, "POST", url, 400, json={"frame": 0, "object": 1, "box": [5, 5, 1, 1]})
    refused(client, svc, "POST", url, 400, json={"frame": 0, "object": 1, "box": [1, 2, 3]})
    # NaN and Infinity are refused when the body is parsed (422), never echoed.
    refused(client, svc, "POST", url, 422, content=b'{"frame":0,"object":1,"points":[[NaN,1]],'
            b'"labels":[1]}', headers={"content-type": "application/json"})
    refused(client, svc, "POST", url, 422, json={**CLICK, "frame": "first"})
    refused(client, svc, "POST", url, 422, json={**CLICK, "extra": 1})
    refused(client, svc, "POST", url, 409, json={**CLICK, "expected_version": 0})


def test_clear_undo_redo(client, svc):
    vid = opened(client)
    url = f"/api/videos/{vid}"
    one = client.post(f"{url}/prompts", json=CLICK).json()
    mask_one = label_map(client, vid, 0)
    client.post(f"{url}/prompts", json={**CLICK, "points": [[700, 400]]})
    mask_two = label_map(client, vid, 0)
    assert not np.array_equal(mask_one, mask_two)
    undone = client.post(f"{url}/undo", json={}).json()
    assert undone["frame"] == 0 and np.array_equal(label_map(client, vid, 0), mask_one)
    assert client.get(url).json()["can_redo"]
    client.post(f"{url}/redo")
    assert np.array_equal(label_map(client, vid, 0), mask_two)
    cleared = client.post(f"{url}/prompts/clear", json={"frame": 0, "object": 1}).json()
    assert cleared["objects"] == [] and not label_map(client, vid, 0).any()
    assert client.get(f"{url}/prompts").json()["prompts"] == []
    client.post(f"{url}/undo")  # the clear
    assert np.array_equal(label_map(client, vid, 0), mask_two)
    client.post(f"{url}/undo")
    client.post(f"{url}/undo")
    assert not label_map(client, vid, 0).any()
    assert one["version"] < client.get(url).json()["version"]
    refused(client, svc, "POST", f"{url}/undo", 409)
    client.post(f"{url}/redo")
    client.post(f"{url}/prompts", json={**CLICK, "points": [[10, 10]]})  # drops the redo stack
    refused(client, svc, "POST", f"{url}/redo", 409)
    refused(client, svc, "POST", f"{url}/prompts/clear", 404, json={"frame": 0, "object": 9})


# ------------------------------------------------------------------- objects
def test_objects(client, svc):
    vid = opened(client)
    url = f"/api/videos/{vid}/objects"
    second = client.post(url, json={"name": "dog", "color": "#00FF00"})
    assert second.status_code == 201
    assert second.json()["object"] == {**second.json()["object"], "id": 2, "name": "dog",
                                       "color": "#00ff00"}
    assert client.patch(f"{url}/2", json={"name": "cat"}).json()["object"]["name"] == "cat"
    refused(client, svc, "PATCH", f"{url}/2", 400, json={"color": "green"})
    refused(client, svc, "PATCH", f"{url}/5", 404, json={"name": "x"})
    refused(client, svc, "POST", url, 409, json={"id": 2})
    refused(client, svc, "POST", url, 400, json={"id": 300})
    refused(client, svc, "DELETE", f"{url}/5", 404)
    client.post(f"/api/videos/{vid}/prompts", json={**CLICK, "object": 2})
    assert client.delete(f"{url}/2").status_code == 200
    assert counts(svc)["actions"] == 0 and counts(svc)["masks"] == 0
    assert [o["id"] for o in client.get(f"/api/videos/{vid}").json()["objects"]] == [1]


def test_two_tabs_clicking_at_once(client, svc):
    """Concurrent clicks on one video are serialised: every one stored, versions distinct."""
    vid = opened(client)
    client.post(f"/api/videos/{vid}/objects", json={})
    start = client.get(f"/api/videos/{vid}").json()["version"]
    results, errors = [], []

    def tab(obj: int):
        for i in range(4):
            r = client.post(f"/api/videos/{vid}/prompts",
                            json={**CLICK, "object": obj, "points": [[300 + 50 * i, 200]]})
            (results if r.status_code == 200 else errors).append(r)

    threads = [threading.Thread(target=tab, args=(obj,)) for obj in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(r.json()["version"] for r in results) == list(range(start + 1, start + 9))
    assert client.get(f"/api/videos/{vid}").json()["version"] == start + 8
    listed = client.get(f"/api/videos/{vid}/prompts").json()["prompts"]
    assert sorted(len([p for p in listed if p["object"] == o]) for o in (1, 2)) == [4, 4]
