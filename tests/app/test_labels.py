"""The project label set: endpoints, object labels, `serve --labels`, COCO per label, YOLO-seg.

Bad input must answer 4xx (or exit 2 for the CLI) with a clear message and store nothing.
"""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile

import numpy as np
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as mask_utils
from scipy import ndimage

from masklet.app import db as app_db
from masklet.app.labels import LabelBook, parse_label_file, yolo_classes
from masklet.app.yolo import join_parts, mask_parts, polygon_line
from masklet.cli import main

from .conftest import app_client, copy_clip, counts
from .test_api import opened, refused
from .test_exports import export, shown_masks, tracked_two_objects


def state(svc) -> dict:
    """What 'nothing stored' compares: row counts, the labels and the objects' labels."""
    return {**counts(svc),
            "labels": [tuple(r) for r in svc.db.query("SELECT * FROM labels ORDER BY id")],
            "object_labels": [tuple(r) for r in svc.db.query(
                "SELECT video_id, id, label_id FROM objects ORDER BY video_id, id")]}


def refused_label(client, svc, method: str, url: str, status: int, **kwargs) -> str:
    before = state(svc)
    detail = refused(client, svc, method, url, status, **kwargs)
    assert state(svc) == before
    return detail


# ------------------------------------------------------------------ endpoints
def test_label_endpoints(client, svc):
    assert client.get("/api/labels").json() == {"labels": []}
    person = client.post("/api/labels", json={"name": " person ", "yolo_id": 4})
    assert person.status_code == 201
    person = person.json()
    assert person["name"] == "person" and person["yolo_id"] == 4
    assert person["color"].startswith("#") and len(person["color"]) == 7
    car = client.post("/api/labels", json={"name": "car", "color": "#00FF00"}).json()
    assert car == {"id": person["id"] + 1, "name": "car", "color": "#00ff00", "yolo_id": None}
    assert client.get("/api/labels").json()["labels"] == [person, car]

    url = "/api/labels"
    assert "exists" in refused_label(client, svc, "POST", url, 409, json={"name": "person"})
    assert "'person'" in refused_label(client, svc, "POST", url, 409,
                                       json={"name": "bus", "yolo_id": 4})
    for body, status in (({"name": ""}, 400), ({"name": "x" * 201}, 400),
                         ({"name": "bus", "color": "red"}, 400),
                         ({"name": "bus", "yolo_id": -1}, 400),
                         ({"name": "bus", "yolo_id": 10**6}, 400),
                         ({"name": "bus", "yolo_id": True}, 422),
                         ({"name": "bus", "shape": "round"}, 422), ({}, 422)):
        refused_label(client, svc, "POST", url, status, json=body)
    refused_label(client, svc, "POST", url, 403, json={"name": "bus"},
                  headers={"X-Masklet": ""})

    lid = car["id"]
    patched = client.patch(f"{url}/{lid}", json={"name": "truck", "yolo_id": 0})
    assert patched.json() == {**car, "name": "truck", "yolo_id": 0}
    assert client.patch(f"{url}/{lid}", json={"color": "#123456"}).json()["name"] == "truck"
    assert client.patch(f"{url}/{lid}", json={"yolo_id": None}).json()["yolo_id"] is None
    assert "exists" in refused_label(client, svc, "PATCH", f"{url}/{lid}", 409,
                                     json={"name": "person"})
    refused_label(client, svc, "PATCH", f"{url}/{lid}", 409, json={"yolo_id": 4})
    refused_label(client, svc, "PATCH", f"{url}/{lid}", 400, json={"name": None})
    refused_label(client, svc, "PATCH", f"{url}/{lid}", 400, json={"color": None})
    refused_label(client, svc, "PATCH", f"{url}/999", 404, json={"name": "x"})
    refused_label(client, svc, "PATCH", f"{url}/{2**63}", 422, json={"name": "x"})

    assert client.delete(f"{url}/{lid}").status_code == 204
    refused_label(client, svc, "DELETE", f"{url}/{lid}", 404)
    assert [lab["name"] for lab in client.get(url).json()["labels"]] == ["person"]
    # Ids are never reused: a new label does not inherit an old one's COCO category id.
    assert client.post(url, json={"name": "bus"}).json()["id"] == lid + 1


def test_label_changes_reach_every_video_s_page(client, svc, root):
    """Labels are the data folder's, so a change is an event on every video's stream (a
    page open on another video reloads its label selects); a refused change is none."""
    first = opened(client)
    copy_clip(root / "clip2", 2)
    second = opened(client, "clip2")
    start = svc.hub.last_seq

    def label_events(video_id: int) -> list[str]:
        return [name for _, name, _ in svc.hub.since(video_id, start) if name == "labels"]

    lid = client.post("/api/labels", json={"name": "person"}).json()["id"]
    client.patch(f"/api/labels/{lid}", json={"color": "#123456"})
    refused_label(client, svc, "PATCH", f"/api/labels/{lid}", 400, json={"name": ""})
    refused_label(client, svc, "POST", "/api/labels", 409, json={"name": "person"})
    client.delete(f"/api/labels/{lid}")
    assert label_events(first) == label_events(second) == ["labels"] * 3
    # A video's own events still come in order with them; forgetting one video keeps them.
    client.post(f"/api/videos/{first}/objects", json={})
    events = svc.hub.since(first, start)
    assert [seq for seq, _, _ in events] == sorted(seq for seq, _, _ in events)
    assert events[-1][1] == "changed"
    svc.hub.forget(first)
    assert label_events(second) == ["labels"] * 3


def test_object_labels(client, svc):
    vid = opened(client)
    person = client.post("/api/labels", json={"name": "person"}).json()["id"]
    url = f"/api/videos/{vid}/objects/1"
    assert client.get(f"/api/videos/{vid}").json()["objects"][0]["label"] is None
    result = client.patch(url, json={"label": person})
    assert result.status_code == 200 and result.json()["object"]["label"] == person
    # A rename leaves the label as it is; null unlabels.
    client.patch(url, json={"name": "Ann"})
    assert client.get(f"/api/videos/{vid}").json()["objects"][0]["label"] == person
    detail = refused_label(client, svc, "PATCH", url, 422, json={"label": 7, "name": "Bob"})
    assert detail == "unknown label 7"
    assert client.get(f"/api/videos/{vid}").json()["objects"][0]["name"] == "Ann"
    refused_label(client, svc, "PATCH", url, 422, json={"label": 1.5})
    refused_label(client, svc, "PATCH", f"/api/videos/{vid}/objects/9", 404,
                  json={"label": person})
    assert client.patch(url, json={"label": None}).json()["object"]["label"] is None
    client.patch(url, json={"label": person})
    # Deleting the label unlabels its objects.
    client.delete(f"/api/labels/{person}")
    assert client.get(f"/api/videos/{vid}").json()["objects"][0]["label"] is None


def test_old_data_folder_opens(make_service, tmp_path):
    """A data folder made before labels existed opens; its objects are unlabelled."""
    old = app_db.SCHEMA
    start = old.index("-- The project's label set")
    old = old[:start] + old[old.index("CREATE TABLE IF NOT EXISTS actions"):]
    old = "\n".join(line for line in old.splitlines() if "label_id" not in line)
    (tmp_path / "data").mkdir()
    with sqlite3.connect(tmp_path / "data" / "masklet.db") as conn:
        conn.executescript(old)
        conn.execute("INSERT INTO videos (name, kind, source, location, num_frames, width, "
                     "height, frame_names, created_at) VALUES ('v', 'images', 'path', '/x', "
                     "1, 4, 4, '[\"a.jpg\"]', 5.0)")
        conn.execute("INSERT INTO objects (video_id, id, name, color, created_at) "
                      "VALUES (1, 1, 'o', '#000000', 5.0)")
    client = app_client(make_service())
    assert client.get("/api/videos/1").json()["objects"][0]["label"] is None
    assert client.get("/api/videos").json()["videos"][0]["created_at"] == 5.0
    lid = client.post("/api/labels", json={"name": "cat"}).json()["id"]
    assert client.patch("/api/videos/1/objects/1", json={"label": lid}).status_code == 200
    assert client.get("/api/videos/1").json()["objects"][0]["label"] == lid
    client.delete(f"/api/labels/{lid}")  # the added column keeps its foreign key
    assert client.get("/api/videos/1").json()["objects"][0]["label"] is None


def test_videos_list_tells_sessions_apart(client, svc, root):
    first = client.post("/api/videos/open", json={"path": "clip"}).json()["id"]
    copy_clip(root / "other" / "clip", 2)
    second = client.post("/api/videos/open", json={"path": "other/clip"}).json()["id"]
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    third = client.post("/api/videos/upload", files={"file": ("clip.png", png.getvalue())})
    rows = {v["id"]: v for v in client.get("/api/videos").json()["videos"]}
    assert {rows[i]["name"] for i in (first, second, third.json()["id"])} == {"clip"}
    assert rows[first]["location"] == str((root / "clip").resolve())
    assert rows[second]["location"] != rows[first]["location"]
    assert rows[third.json()["id"]]["location"] == "upload"
    assert rows[first]["created_at"] <= rows[second]["created_at"]


# ---------------------------------------------------------------- labels file
def test_labels_file_parsing(tmp_path):
    text = tmp_path / "labels.txt"
    text.write_text("# classes\nperson\n\n  bicycle  \n")
    assert [s.name for s in parse_label_file(text)] == ["person", "bicycle"]
    good = tmp_path / "labels.json"
    good.write_text(json.dumps([{"name": "cat", "color": "#AABBCC", "yolo_id": 2},
                                {"name": "dog"}]))
    specs = parse_label_file(good)
    assert (specs[0].color, specs[0].yolo_id, specs[1].color) == ("#aabbcc", 2, None)
    bad = {"[{\"name\": \"a\"},]": "not valid JSON", "{\"name\": \"a\"}": "list",
           "[\"a\"]": "label 1 must be an object", "[{\"nom\": \"a\"}]": "unknown key 'nom'",
           "[{\"name\": \"a\", \"color\": \"blue\"}]": "label 1: colour",
           "[{\"name\": \"a\", \"yolo_id\": 1.5}]": "YOLO id",
           "[{\"name\": \"a\"}, {\"name\": \"a\"}]": "listed twice",
           "[{\"name\": \"a\", \"yolo_id\": 1}, {\"name\": \"b\", \"yolo_id\": 1}]": "twice",
           "[]": "no labels", "# only a comment\n": "no labels"}
    for content, words in bad.items():
        path = tmp_path / ("bad.txt" if content.startswith("#") else "bad.json")
        path.write_text(content)
        try:
            parse_label_file(path)
        except ValueError as err:
            assert words in str(err) and str(path) in str(err) and "\n" not in str(err)
        else:
            raise AssertionError(f"{content!r} was accepted")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00bad")
    try:
        parse_label_file(tmp_path / "bin")
    except ValueError as err:
        assert "UTF-8" in str(err)


def test_serve_refuses_a_malformed_labels_file(svc, tmp_path):
    """Exit 2 with one line; the data folder's label set is left as it was."""
    svc.labels.create("kept", None, 1)
    data_dir = svc.data_dir
    svc.close()  # free the folder (a second server would be refused for holding it)
    before = sqlite3.connect(data_dir / "masklet.db").execute("SELECT * FROM labels").fetchall()
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"name\": \"cat\", \"color\": \"#12345\"}]")
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--port", "0", "--data-dir", str(data_dir),
                                  "--labels", str(bad)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("masklet: error: --labels: ")
    assert "label 1: colour" in lines[0]
    result = runner.invoke(main, ["serve", "--labels", str(tmp_path / "nowhere.txt")])
    assert result.exit_code == 2 and "does not exist" in result.output
    after = sqlite3.connect(data_dir / "masklet.db").execute("SELECT * FROM labels").fetchall()
    assert after == before


def test_merge_updates_names_and_is_all_or_nothing(svc, tmp_path):
    book = LabelBook(svc.db)
    cat = book.create("cat", "#111111", 0)
    dog = book.create("dog", None, 1)
    path = tmp_path / "l.json"
    # Swapping two labels' YOLO ids in one file is fine; colours not given are kept.
    path.write_text(json.dumps([{"name": "cat", "yolo_id": 1}, {"name": "dog", "yolo_id": 0,
                                                                 "color": "#222222"},
                                {"name": "bird"}]))
    assert book.merge(parse_label_file(path)) == (1, 2)
    rows = {r["name"]: dict(r) for r in svc.db.query("SELECT * FROM labels")}
    assert rows["cat"] == {**cat, "yolo_id": 1} and rows["dog"]["color"] == "#222222"
    assert rows["dog"]["id"] == dog["id"] and rows["bird"]["yolo_id"] is None
    before = state(svc)
    path.write_text(json.dumps([{"name": "fish"}, {"name": "eel", "yolo_id": 1}]))
    try:
        book.merge(parse_label_file(path))
    except ValueError as err:
        assert "YOLO id 1 belongs to label 'cat'" in str(err)
    else:
        raise AssertionError("a clash was merged")
    assert state(svc) == before


# --------------------------------------------------------------------- exports
def _labelled_tracked(client) -> tuple[int, dict]:
    """Two tracked objects: 1 labelled 'person' (YOLO id 5), 2 labelled 'car' (no YOLO
    id), plus label 'tree' on no object; returns the video id and the labels by name."""
    vid = tracked_two_objects(client)
    labels = {}
    for body in ({"name": "tree"}, {"name": "person", "yolo_id": 5}, {"name": "car"}):
        labels[body["name"]] = client.post("/api/labels", json=body).json()
    for obj, name in ((1, "person"), (2, "car")):
        client.patch(f"/api/videos/{vid}/objects/{obj}", json={"label": labels[name]["id"]})
    return vid, labels


def test_coco_one_category_per_label(client, svc):
    vid = tracked_two_objects(client)
    sav_before = export(client, vid, "sav")[1]
    davis_before = export(client, vid, "davis")[1]
    unlabelled = json.loads(export(client, vid, "coco")[1])
    assert unlabelled["categories"] == [{"id": 0, "name": "unlabelled"}]
    assert {a["category_id"] for a in unlabelled["annotations"]} == {0}

    person = client.post("/api/labels", json={"name": "person"}).json()["id"]
    client.post("/api/labels", json={"name": "tree"})
    client.patch(f"/api/videos/{vid}/objects/2", json={"label": person})
    coco = json.loads(export(client, vid, "coco")[1])
    assert coco["categories"] == [{"id": 0, "name": "unlabelled"},
                                  {"id": person, "name": "person"},
                                  {"id": person + 1, "name": "tree"}]
    for ann in coco["annotations"]:
        assert ann["category_id"] == {1: 0, 2: person}[ann["track_id"]]
    assert {a["track_id"] for a in coco["annotations"]} == {1, 2}
    # Apart from the categories, the file is the one before labelling.
    for a, b in zip(coco["annotations"], unlabelled["annotations"], strict=True):
        assert {**a, "category_id": 0} == b
    assert [o["label"] for o in coco["masklet"]["objects"]] == [None, person]
    client.patch(f"/api/videos/{vid}/objects/1", json={"label": person})
    labelled = json.loads(export(client, vid, "coco")[1])
    assert [c["name"] for c in labelled["categories"]] == ["person", "tree"]
    # DAVIS and SA-V are unchanged by labels.
    assert export(client, vid, "sav")[1] == sav_before
    assert export(client, vid, "davis")[1] == davis_before


def _polygon_mask(line: str, width: int, height: int) -> tuple[int, np.ndarray]:
    cls, *coords = line.split()
    xy = np.array(coords, dtype=np.float64).reshape(-1, 2) * [width, height]
    rle = mask_utils.frPyObjects([xy.ravel().tolist()], height, width)
    return int(cls), mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def test_yolo_export_matches_the_masks(client, svc):
    vid, labels = _labelled_tracked(client)
    client.post(f"/api/videos/{vid}/objects", json={})  # object 3: unlabelled, with a mask
    # A second part for object 1 on frame 2, and a hole in it: still one line, filled.
    client.post(f"/api/videos/{vid}/brush", json={"frame": 2, "object": 1, "mode": "paint",
                                                  "radius": 30, "points": [[880, 470]]})
    client.post(f"/api/videos/{vid}/brush", json={"frame": 2, "object": 1, "mode": "erase",
                                                  "radius": 5, "points": [[880, 470]]})
    client.post(f"/api/videos/{vid}/prompts", json={"frame": 7, "object": 3,
                                                    "box": [600, 100, 800, 300]})
    frames = shown_masks(client, vid, 8)
    info, data = export(client, vid, "yolo")
    assert info["file"] == "clip_yolo.zip" and info["unlabelled_objects"] == 1
    classes = yolo_classes(client.get("/api/labels").json()["labels"])
    # tree and car have no YOLO id: they take the free class ids 0 and 1, in list order.
    assert classes == {labels["tree"]["id"]: 0, labels["person"]["id"]: 5,
                       labels["car"]["id"]: 1}
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        yaml = zf.read("clip/data.yaml").decode()
        files = {n: zf.read(n).decode() for n in names if n.endswith(".txt")}
    assert sorted(files) == [f"clip/labels/{i:05d}.txt" for i in range(8)]
    assert "nc: 6" in yaml and '  5: "person"' in yaml and '  1: "car"' in yaml
    assert '  0: "tree"' in yaml and '  2: "unused_2"' in yaml
    fill = ndimage.generate_binary_structure(2, 1)
    assert ndimage.label(frames[2][1], structure=fill)[1] >= 2
    for i in range(8):
        lines = files[f"clip/labels/{i:05d}.txt"].splitlines()
        got = dict(_polygon_mask(line, 960, 540) for line in lines)
        # One line per labelled object (parts joined), class from its label.
        expected = {{1: 5, 2: 1}[o]: m for o, m in frames[i].items() if o != 3}
        assert sorted(got) == sorted(expected) and len(lines) == len(got)
        for cls, mask in expected.items():
            filled = ndimage.binary_fill_holes(mask, structure=fill)
            assert np.array_equal(got[cls], filled), (i, cls)


def test_yolo_export_refusals_and_listing(client, svc):
    vid = opened(client)
    info, data = export(client, vid, "yolo")
    assert info["unlabelled_objects"] == 0
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        # No mask anywhere: each frame's file is there and empty (nothing on it).
        assert zf.read("clip/labels/00003.txt") == b""
        assert "names: {}" in zf.read("clip/data.yaml").decode()
    assert [e["format"] for e in client.get(f"/api/videos/{vid}/exports").json()["exports"]] \
        == ["yolo"]
    detail = refused(client, svc, "POST", f"/api/videos/{vid}/exports", 400,
                     json={"format": "yolo8"})
    assert "yolo" in detail


def test_polygons_of_masks_in_parts():
    """Outlines fill back to the mask's pixels: parts joined, holes filled, islands kept."""
    mask = np.zeros((60, 80), dtype=bool)
    mask[5:40, 5:40] = True
    mask[15:30, 15:30] = False  # a hole ...
    mask[20:25, 20:25] = True  # ... with an island in it
    mask[45:55, 60:78] = True  # a second part
    mask[10, 60] = True  # a lone pixel
    mask[40, 40] = True  # touches the first part at a corner only: its own part
    parts = mask_parts(mask)
    assert len(parts) == 4 and len(parts[-1]) == 4  # largest first; a pixel is a square
    filled = ndimage.binary_fill_holes(mask, structure=ndimage.generate_binary_structure(2, 1))
    line = polygon_line(3, join_parts(parts), 80, 60)
    cls, got = _polygon_mask(line, 80, 60)
    assert cls == 3 and np.array_equal(got, filled)
    assert all(0 <= float(v) <= 1 for v in line.split()[1:])
    assert mask_parts(np.zeros((4, 4), dtype=bool)) == []


def test_zip_exports_do_not_depend_on_when_they_are_made(client, svc):
    """Zip entries carry a fixed time rather than the export's (or a temporary file's), so
    the same annotation exported twice is the same file: the DAVIS comparison in
    `test_coco_one_category_per_label` depends on it."""
    vid, _ = _labelled_tracked(client)
    for fmt in ("davis", "yolo"):
        with zipfile.ZipFile(io.BytesIO(export(client, vid, fmt)[1])) as zf:
            infos = zf.infolist()
            assert infos and {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}, fmt
            assert all(i.external_attr >> 16 == 0o100644 for i in infos), fmt
