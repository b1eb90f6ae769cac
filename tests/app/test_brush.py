"""Brush and eraser: the stroke's pixels, storage as a mask prompt, undo / redo, restart.

Bad strokes must answer 422 (404 for an unknown video, frame or object) and store nothing.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from masklet.app.brush import stroke_mask

from .conftest import app_client, wait_job
from .test_api import CLICK, opened, refused
from .test_exports import shown_masks

W, H = 960, 540


def brute_stroke(points: np.ndarray, radius: float, height: int, width: int) -> np.ndarray:
    """Pixels whose centre is within `radius` of the polyline, by brute force."""
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    centres = np.stack([xx, yy], -1)
    best = np.full((height, width), np.inf)
    pairs = list(zip(points[:-1], points[1:])) or [(points[0], points[0])]
    for a, b in pairs:
        d = b - a
        t = np.zeros((height, width)) if not d.any() else np.clip(
            ((centres - a) @ d) / (d @ d), 0, 1)
        best = np.minimum(best, np.linalg.norm(centres - a - t[..., None] * d, axis=-1))
    out = best <= radius
    out[np.clip(points[:, 1].astype(int), 0, height - 1),
        np.clip(points[:, 0].astype(int), 0, width - 1)] = True
    return out


def test_stroke_mask_is_the_swept_disc():
    rng = np.random.default_rng(0)
    for case in range(120):
        h, w = rng.integers(4, 50, 2)
        points = rng.uniform(0, 1, (int(rng.integers(1, 7)), 2)) * [w, h]
        if case % 4 == 0:
            points = np.round(points)  # on pixel corners: ties at the disc's edge
        if case % 6 == 0 and len(points) > 1:
            points[1] = points[0] + [0, 3]  # vertical and zero-length segments
        radius = float(rng.uniform(0.1, 15))
        assert np.array_equal(stroke_mask(points, radius, h, w),
                              brute_stroke(points, radius, h, w)), case


def rle_mask(client, vid: int, frame: int, obj: int) -> np.ndarray:
    return shown_masks(client, vid, frame + 1)[frame].get(obj, np.zeros((H, W), bool))


def brush(client, vid: int, points, mode: str = "paint", radius: float = 12.0,
          frame: int = 0, obj: int = 1) -> dict:
    result = client.post(f"/api/videos/{vid}/brush", json={
        "frame": frame, "object": obj, "mode": mode, "radius": radius, "points": points})
    assert result.status_code == 200, result.text
    return result.json()


def test_paint_erase_undo_redo(client, svc):
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    clicked = rle_mask(client, vid, 0, 1)
    assert clicked.any()
    paint = [[50, 50], [150, 80], [200, 200]]
    answer = brush(client, vid, paint, radius=20)
    # The answer is the prompts endpoint's: the new version and the frame's masks.
    assert {"version", "frame", "object", "action_id", "mask_png", "objects"} <= set(answer)
    painted = clicked | stroke_mask(np.array(paint, float), 20, H, W)
    assert np.array_equal(rle_mask(client, vid, 0, 1), painted)
    png = np.array(Image.open(io.BytesIO(client.get(f"/api/videos/{vid}/masks/0").content)))
    assert np.array_equal(png == 1, painted)
    prompts = client.get(f"/api/videos/{vid}/prompts").json()["prompts"]
    assert [(p["kind"], p["id"]) for p in prompts] == [("mask", answer["action_id"])]
    row = svc.db.query_one("SELECT kind, mask_rle FROM actions WHERE id = ?",
                           (answer["action_id"],))
    assert row["kind"] == "mask" and row["mask_rle"]

    erase = [[120, 60], [400, 220]]
    brush(client, vid, erase, mode="erase", radius=30)
    erased = painted & ~stroke_mask(np.array(erase, float), 30, H, W)
    assert np.array_equal(rle_mask(client, vid, 0, 1), erased)
    # A stroke that changes no pixel stores nothing.
    version = client.get(f"/api/videos/{vid}").json()["version"]
    same = brush(client, vid, [[900, 500]], mode="erase", radius=5)
    assert same["action_id"] is None and same["version"] == version

    for expected, step in ((painted, "undo"), (clicked, "undo"), (painted, "redo"),
                           (erased, "redo")):
        assert client.post(f"/api/videos/{vid}/{step}").status_code == 200
        assert np.array_equal(rle_mask(client, vid, 0, 1), expected), step


def test_brush_refusals(make_service):
    svc = make_service(max_brush_points=5)
    client = app_client(svc)
    vid = opened(client)
    url = f"/api/videos/{vid}/brush"
    good = {"frame": 0, "object": 1, "mode": "paint", "radius": 10, "points": [[10, 10]]}
    for change, words in (({"points": [[961, 10]]}, "outside the 960x540 frame"),
                          ({"points": [[10, -1]]}, "outside"),
                          ({"radius": 0}, "radius"), ({"radius": -3}, "radius"),
                          ({"radius": 961}, "<= 960"), ({"points": []}, "at least one"),
                          ({"points": [[1, 1]] * 6}, "at most 5 points"),
                          ({"points": [[1, 2, 3]]}, "[x, y]")):
        assert words in refused(client, svc, "POST", url, 422, json={**good, **change})
    for change in ({"mode": "smudge"}, {"radius": "big"}, {"points": [["a", 1]]},
                   {"extra": 1}, {"object": True}):
        refused(client, svc, "POST", url, 422, json={**good, **change})
    refused(client, svc, "POST", url, 422,
            content=b'{"frame": 0, "object": 1, "mode": "paint", "radius": NaN, '
                    b'"points": [[1, 1]]}', headers={"content-type": "application/json"})
    refused(client, svc, "POST", url, 404, json={**good, "object": 9})
    refused(client, svc, "POST", url, 404, json={**good, "frame": 8})
    refused(client, svc, "POST", "/api/videos/99/brush", 404, json=good)
    refused(client, svc, "POST", url, 403, json=good, headers={"X-Masklet": ""})
    refused(client, svc, "POST", url, 409, json={**good, "expected_version": 0})
    assert brush(client, vid, [[1, 1]] * 5)["action_id"] is not None


def test_tracking_uses_the_stroke_as_a_mask_prompt(client, svc, root):
    """Tracking from a brushed mask gives what tracking from the same mask imported does."""
    vid, other = opened(client), opened(client)
    for v in (vid, other):  # a click first: the model state exists before the edit
        client.post(f"/api/videos/{v}/prompts", json={**CLICK, "points": [[100, 400]]})
    stroke = [[380, 200], [420, 260], [430, 330]]
    brush(client, vid, stroke, radius=40)
    drawn = rle_mask(client, vid, 0, 1)
    png = io.BytesIO()
    Image.fromarray(drawn.astype(np.uint8)).save(png, format="PNG")
    imported = client.post(f"/api/videos/{other}/masks/import",
                           files={"file": ("m.png", png.getvalue())},
                           data={"frame": "0", "object": "1"})
    assert imported.status_code == 200
    for v in (vid, other):
        client.post(f"/api/videos/{v}/track", json={"direction": "forward"})
        assert wait_job(client, v)["state"] == "done"
    brushed, reference = shown_masks(client, vid, 8), shown_masks(client, other, 8)
    assert all(1 in brushed[f] for f in range(1, 8)), "tracking lost the brushed object"
    for f in range(8):
        assert np.array_equal(brushed[f][1], reference[f][1]), f
    # Painting on a tracked frame starts from the tracked mask shown there.
    tracked = rle_mask(client, vid, 4, 1)
    brush(client, vid, [[700, 100]], radius=15, frame=4)
    assert np.array_equal(rle_mask(client, vid, 4, 1),
                          tracked | stroke_mask(np.array([[700.0, 100.0]]), 15, H, W))


def test_brush_survives_a_restart(make_service):
    first = make_service()
    client = app_client(first)
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    clicked = rle_mask(client, vid, 0, 1)
    brush(client, vid, [[60, 60], [300, 120]], radius=25)
    brushed = rle_mask(client, vid, 0, 1)
    prompts = client.get(f"/api/videos/{vid}/prompts").json()
    first.close()

    client = app_client(make_service())
    assert np.array_equal(rle_mask(client, vid, 0, 1), brushed)
    assert client.get(f"/api/videos/{vid}/prompts").json() == prompts
    assert client.post(f"/api/videos/{vid}/undo").status_code == 200
    assert np.array_equal(rle_mask(client, vid, 0, 1), clicked)
    assert client.post(f"/api/videos/{vid}/redo").status_code == 200
    assert np.array_equal(rle_mask(client, vid, 0, 1), brushed)


@pytest.mark.parametrize("mode", ["paint", "erase"])
def test_brush_on_an_image_set(client, svc, root, mode):
    from conftest import require_data

    (root / "photos").mkdir()
    (root / "photos" / "truck.jpg").write_bytes(require_data("images", "truck.jpg").read_bytes())
    vid = client.post("/api/videos/open", json={"path": "photos", "kind": "images"}).json()["id"]
    client.post(f"/api/videos/{vid}/objects", json={})
    client.post(f"/api/videos/{vid}/prompts",
                json={"frame": 0, "object": 1, "box": [200, 200, 1500, 1000]})
    w, h = client.get(f"/api/videos/{vid}").json()["frame_sizes"][0]
    before = shown_masks(client, vid, 1)[0][1]
    points = [[300, 300], [1200, 900]]
    client.post(f"/api/videos/{vid}/brush", json={"frame": 0, "object": 1, "mode": mode,
                                                  "radius": 50, "points": points})
    swept = stroke_mask(np.array(points, float), 50, h, w)
    after = shown_masks(client, vid, 1)[0].get(1, np.zeros((h, w), bool))
    assert np.array_equal(after, before | swept if mode == "paint" else before & ~swept)


def test_erasing_everything_then_tracking(client, svc):
    """An erased-out object is an empty mask prompt, and tracking starts from it.

    (What the model then finds on later frames is its own: the nano model picks up a
    smaller region again, so only "not what the click gave" is asserted.)"""
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts", json=CLICK)
    track = {"direction": "forward", "max_frames": 3}
    client.post(f"/api/videos/{vid}/track", json=track)
    assert wait_job(client, vid)["state"] == "done"
    from_click = shown_masks(client, vid, 3)
    assert brush(client, vid, [[480, 270]], mode="erase", radius=960)["objects"] == []
    assert not rle_mask(client, vid, 0, 1).any()
    client.post(f"/api/videos/{vid}/track", json=track)
    assert wait_job(client, vid)["state"] == "done"
    from_erased = shown_masks(client, vid, 3)
    assert 1 not in from_erased[0]
    for f in (1, 2):
        assert not np.array_equal(from_erased[f].get(1, np.zeros((H, W), bool)),
                                  from_click[f][1]), f
