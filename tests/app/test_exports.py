"""Exports read back and compared with masklet's own writers; import of exported masks."""

from __future__ import annotations

import io
import json
import zipfile

import av
import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from masklet.export import image_masks_to_coco, video_masks_to_coco, video_masks_to_sav

from .conftest import wait_job
from .test_api import label_map, opened, refused


def tracked_two_objects(client) -> int:
    vid = opened(client)
    client.post(f"/api/videos/{vid}/objects", json={})
    for obj, point in ((1, [400, 220]), (2, [230, 260])):
        r = client.post(f"/api/videos/{vid}/prompts",
                        json={"frame": 0, "object": obj, "points": [point], "labels": [1]})
        assert r.status_code == 200
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward"})
    assert wait_job(client, vid)["state"] == "done"
    return vid


def shown_masks(client, vid: int, frames: int) -> list[dict[int, np.ndarray]]:
    """Every frame's shown masks per object, decoded from the API's RLE answer."""
    out = []
    for f in range(frames):
        objs = client.get(f"/api/videos/{vid}/masks/{f}/rle").json()["objects"]
        out.append({o["id"]: mask_utils.decode({**o["rle"], "counts": o["rle"]["counts"].encode()})
                    .astype(bool) for o in objs if o["area"] > 0})
    return out


def export(client, vid: int, fmt: str) -> tuple[dict, bytes]:
    result = client.post(f"/api/videos/{vid}/exports", json={"format": fmt})
    assert result.status_code == 200, result.text
    body = client.get(result.json()["url"])
    assert body.status_code == 200
    return result.json(), body.content


def test_video_exports_match_the_library_writers(client, svc):
    vid = tracked_two_objects(client)
    frames = shown_masks(client, vid, 8)
    assert all(frames[f] for f in range(8)), "tracking left frames without masks"
    names = [f"{i:05d}.jpg" for i in range(8)]

    coco = json.loads(export(client, vid, "coco")[1])
    assert coco.pop("masklet")["objects"][1]["name"] == "object 2"
    # The library writer's layout, with one category per label: none here, so both
    # objects are in the "unlabelled" one (test_labels.py has the labelled case).
    expected = video_masks_to_coco("clip", frames, frame_names=names)
    for ann in expected["annotations"]:
        ann["category_id"] = 0
    expected["categories"] = [{"id": 0, "name": "unlabelled"}]
    assert coco == expected
    sav = json.loads(export(client, vid, "sav")[1])
    assert len(sav.pop("masklet_review")["flagged"]) == 8  # review hints: tests/app/test_review.py
    assert sav == video_masks_to_sav("clip", frames)

    info, data = export(client, vid, "davis")
    assert info["file"] == "clip_davis.zip" and info["size"] == len(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.namelist() == [f"clip/{i:05d}.png" for i in range(8)]
        for i in range(8):
            with Image.open(io.BytesIO(zf.read(f"clip/{i:05d}.png"))) as png:
                assert png.mode == "P"
                assert np.array_equal(np.array(png), label_map(client, vid, i))

    info, data = export(client, vid, "overlay")
    with av.open(io.BytesIO(data)) as container:
        decoded = list(container.decode(video=0))
    assert len(decoded) == 8 and (decoded[0].width, decoded[0].height) == (960, 540)
    listed = client.get(f"/api/videos/{vid}/exports").json()["exports"]
    assert sorted(e["format"] for e in listed) == ["coco", "davis", "overlay", "sav"]


def test_export_refusals(client, svc):
    vid = opened(client)
    refused(client, svc, "POST", f"/api/videos/{vid}/exports", 400, json={"format": "gif"})
    refused(client, svc, "POST", "/api/videos/9/exports", 404, json={"format": "coco"})
    for name in ("nothing.json", ".hidden", "..%2Fmasklet.db", "..%2F..%2Fmasklet.db"):
        refused(client, svc, "GET", f"/api/videos/{vid}/exports/{name}", 404)


def test_exported_pngs_import_back_as_prompts(client, svc):
    vid = tracked_two_objects(client)
    _, data = export(client, vid, "davis")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        png = zf.read("clip/00005.png")
    again = client.post("/api/videos/open", json={"path": "clip", "name": "again"}).json()["id"]
    result = client.post(f"/api/videos/{again}/masks/import", files={"file": ("5.png", png)},
                         data={"frame": "5"})
    assert result.status_code == 200, result.text
    assert np.array_equal(label_map(client, again, 5), label_map(client, vid, 5))
    # The imported masks condition tracking like any prompt.
    client.post(f"/api/videos/{again}/track", json={"direction": "backward", "max_frames": 2})
    assert wait_job(client, again)["done"] == 3
    assert label_map(client, again, 3).any()


def test_image_set_coco_matches_the_library(client, svc, root):
    from .conftest import require_data

    (root / "photos").mkdir()
    for name in ("truck.jpg", "groceries.jpg"):
        (root / "photos" / name).write_bytes(require_data("images", name).read_bytes())
    vid = client.post("/api/videos/open", json={"path": "photos", "kind": "images"}).json()["id"]
    detail = client.get(f"/api/videos/{vid}").json()
    client.post(f"/api/videos/{vid}/objects", json={"name": "thing"})
    client.post(f"/api/videos/{vid}/prompts",
                json={"frame": 1, "object": 1, "box": [200, 200, 1500, 1000]})
    w, h = detail["frame_sizes"][0]
    given = np.zeros((h, w), np.uint8)
    given[10:50, 20:90] = 1
    png = io.BytesIO()
    Image.fromarray(given).save(png, format="PNG")
    client.post(f"/api/videos/{vid}/masks/import", files={"file": ("m.png", png.getvalue())},
                data={"frame": "0", "object": "1"})
    frames = shown_masks(client, vid, 2)
    coco = json.loads(export(client, vid, "coco")[1])
    coco.pop("masklet")
    images = [{"file_name": name, "masks": list(frames[i].values()),
               "category_ids": list(frames[i]), "width": w, "height": h}
              for i, (name, (w, h)) in enumerate(zip(detail["frame_names"],
                                                     detail["frame_sizes"], strict=True))]
    expected = image_masks_to_coco(images, categories=[{"id": 0, "name": "unlabelled"}])
    for ann in expected["annotations"]:  # unlabelled; the object id is the track id
        ann["track_id"], ann["category_id"] = ann["category_id"], 0
    assert coco == expected
    assert coco["annotations"][0]["bbox"] == [20.0, 10.0, 70.0, 40.0]
    _, data = export(client, vid, "overlay")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.namelist()) == 2
