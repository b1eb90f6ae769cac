"""Review hints in the app: signals stored while tracking, flags, seen marks, exports."""

from __future__ import annotations

import csv
import io
import json

import pytest

from masklet.tracking.review import FrameReviewInput, ReviewConfig, score_frames

from .conftest import app_client, wait_job
from .test_api import opened
from .test_exports import export, tracked_two_objects

FIELDS = ["frame", "object", "object_score", "iou", "area", "motion", "score", "flagged",
          "reviewed"]


def reviewed_count(svc) -> int:
    return svc.db.query_one("SELECT COUNT(*) FROM reviewed")[0]


def test_tracking_stores_signals_with_each_frame(client, svc):
    vid = tracked_two_objects(client)
    stored = svc.db.query("SELECT * FROM frame_signals WHERE video_id = ? ORDER BY obj, frame",
                          (vid,))
    # Every frame of the forward pass, per object; frame 0 holds the prompts.
    assert [(r["obj"], r["frame"]) for r in stored] == [(o, f) for o in (1, 2) for f in range(8)]
    assert [r["prompted"] for r in stored] == ([1] + [0] * 7) * 2
    masks = {(r["obj"], r["frame"]): r["area"] for r in svc.db.query(
        "SELECT obj, frame, area FROM masks WHERE video_id = ? AND source = 'track'", (vid,))}
    for r in stored:
        if not r["prompted"]:
            assert r["area"] == masks[(r["obj"], r["frame"])]  # the mask written with it
            assert r["iou"] is not None and r["motion"] is None
    # The stored scores are what the scorer gives for the stored signals, in order.
    for obj in (1, 2):
        mine = [r for r in stored if r["obj"] == obj]
        given = [FrameReviewInput(r["object_score"], r["iou"], r["area"],
                                  None if r["x0"] is None else (r["x0"], r["y0"], r["x1"], r["y1"]),
                                  r["motion"], bool(r["prompted"])) for r in mine]
        expected = score_frames(given, svc.config.review)
        assert [r["score"] for r in mine] == pytest.approx([e.score for e in expected])

    body = client.get(f"/api/videos/{vid}/review").json()
    assert body["config"]["threshold"] == ReviewConfig().threshold
    rows = body["rows"]
    assert [list(r) for r in rows[:1]] == [FIELDS]
    assert [(r["frame"], r["object"]) for r in rows] == [(f, o) for f in range(1, 8)
                                                         for o in (1, 2)]
    assert not any(r["reviewed"] for r in rows)
    one = client.get(f"/api/videos/{vid}/review", params={"object": 2}).json()
    assert one["rows"] == [r for r in rows if r["object"] == 2]


def test_flags_follow_the_servers_threshold(make_service, tmp_path):
    svc = make_service()
    vid = tracked_two_objects(app_client(svc))
    scores = sorted(r["score"] for r in app_client(svc).get(
        f"/api/videos/{vid}/review").json()["rows"])
    assert scores[0] < scores[-1], "every frame scored the same: nothing to split"
    svc.close()
    middle = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2
    again = app_client(make_service(review=ReviewConfig(threshold=middle)))
    body = again.get(f"/api/videos/{vid}/review").json()
    assert body["config"]["threshold"] == middle
    flagged = [r for r in body["rows"] if r["flagged"]]
    assert flagged and len(flagged) < len(body["rows"])
    assert all((r["score"] >= middle) == r["flagged"] for r in body["rows"])
    per_object: dict[str, list[int]] = {}
    for r in flagged:
        per_object.setdefault(str(r["object"]), []).append(r["frame"])
    assert body["flagged"] == per_object
    walk = [(o["frame"], o["object"]) for o in body["order"]]
    assert sorted(walk) == sorted((r["frame"], r["object"]) for r in flagged)
    order_scores = [next(r["score"] for r in flagged if (r["frame"], r["object"]) == w)
                    for w in walk]
    assert order_scores == sorted(order_scores, reverse=True)


def test_seen_marks_and_refusals(client, svc):
    vid = tracked_two_objects(client)
    url = f"/api/videos/{vid}/review/seen"
    assert client.post(url, json={"frame": 3, "object": 1}).json() == {"reviewed": 1}
    assert client.post(url, json={"frame": 5, "object": None}).json() == {"reviewed": 2}
    rows = client.get(f"/api/videos/{vid}/review").json()["rows"]
    assert {(r["frame"], r["object"]) for r in rows if r["reviewed"]} == {(3, 1), (5, 1), (5, 2)}
    # Other pages on the video hear of each mark.
    events = [data for _, name, data in svc.hub.since(vid, 0) if name == "reviewed"]
    assert events == [{"frame": 3, "objects": [1]}, {"frame": 5, "objects": [1, 2]}]
    before = reviewed_count(svc)
    bad = [
        ("/api/videos/99/review/seen", {"frame": 1, "object": 1}, 404),
        (url, {"frame": 1, "object": 7}, 404),
        (url, {"frame": 8, "object": 1}, 422),
        (url, {"frame": -1}, 422),
        (url, {"object": 1}, 422),
        (url, {"frame": 1, "object": True}, 422),
        (url, {"frame": 2**63, "object": 1}, 422),
        (url, {"frame": 1, "object": 1, "extra": 1}, 422),
        (url, {"frame": 1.5}, 422),
    ]
    for target, body, status in bad:
        response = client.post(target, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["detail"]
    assert client.post(url, json={"frame": 1}, headers={"X-Masklet": ""}).status_code == 403
    assert reviewed_count(svc) == before
    assert client.get("/api/videos/99/review").status_code == 404
    assert client.get(f"/api/videos/{vid}/review", params={"object": 9}).status_code == 404


def test_edits_mark_frames_reviewed(client, svc):
    vid = tracked_two_objects(client)
    r = client.post(f"/api/videos/{vid}/prompts",
                    json={"frame": 4, "object": 2, "points": [[230, 260]], "labels": [0]})
    assert r.status_code == 200
    assert client.post(f"/api/videos/{vid}/prompts/clear",
                       json={"frame": 6, "object": 1}).status_code == 200  # nothing to clear
    rows = client.get(f"/api/videos/{vid}/review").json()["rows"]
    assert {(r["frame"], r["object"]) for r in rows if r["reviewed"]} == {(4, 2)}
    # An edit stored as a mask action (an import, as the brush stores its strokes) too.
    png = io.BytesIO()
    from PIL import Image

    mask = Image.new("L", (960, 540))
    mask.paste(255, (100, 100, 200, 200))
    mask.save(png, format="PNG")
    r = client.post(f"/api/videos/{vid}/masks/import", data={"frame": "6", "object": "1"},
                    files={"file": ("m.png", png.getvalue(), "image/png")})
    assert r.status_code == 200, r.text
    rows = client.get(f"/api/videos/{vid}/review").json()["rows"]
    assert {(r["frame"], r["object"]) for r in rows if r["reviewed"]} == {(4, 2), (6, 1)}


def test_review_exports(client, svc):
    vid = tracked_two_objects(client)
    client.post(f"/api/videos/{vid}/review/seen", json={"frame": 2, "object": 2})
    rows = client.get(f"/api/videos/{vid}/review").json()["rows"]
    info, data = export(client, vid, "review-csv")
    assert info["format"] == "review-csv" and info["file"] == "clip_review-csv.csv"
    table = list(csv.DictReader(io.StringIO(data.decode())))
    assert list(table[0]) == FIELDS
    assert len(table) == len(rows) == 14
    for line, row in zip(table, rows):
        assert (int(line["frame"]), int(line["object"]), int(line["area"])) == (
            row["frame"], row["object"], row["area"])
        assert float(line["score"]) == pytest.approx(row["score"], rel=1e-5)
        assert float(line["iou"]) == pytest.approx(row["iou"], rel=1e-5)
        assert line["motion"] == ""
        assert line["flagged"] == str(int(row["flagged"]))
        assert line["reviewed"] == str(int(row["reviewed"]))
    assert sum(line["reviewed"] == "1" for line in table) == 1
    listed = client.get(f"/api/videos/{vid}/exports").json()["exports"]
    assert [e["format"] for e in listed] == ["review-csv"]

    sav = json.loads(export(client, vid, "sav")[1])
    review = sav["masklet_review"]
    assert sav["masklet_id"] == [1, 2] and len(review["flagged"]) == 8
    assert review["score"][0] == [None, None]  # the prompted frame is not scored
    for row in rows:
        i = sav["masklet_id"].index(row["object"])
        assert review["flagged"][row["frame"]][i] == row["flagged"]
        assert review["score"][row["frame"]][i] == pytest.approx(row["score"])


def test_review_csv_refused_for_images(client, svc, root):
    from PIL import Image

    (root / "pics").mkdir()
    Image.new("RGB", (64, 48)).save(root / "pics" / "a.jpg")
    vid = client.post("/api/videos/open", json={"path": "pics", "kind": "images"}).json()["id"]
    r = client.post(f"/api/videos/{vid}/exports", json={"format": "review-csv"})
    assert r.status_code == 400 and "videos" in r.json()["detail"]


def test_resumed_job_scores_as_one_run(make_service):
    """A job cut off and resumed gives the scores an uninterrupted run gives (a config
    where the anchor's area and the carried doubt matter: a fresh scorer would differ)."""
    svc = make_service(review=ReviewConfig(carry=1.0, area_ratio_low=1.0,
                                           area_ratio_high=1.1, w_area=0.5))
    client = app_client(svc)
    vid = opened(client)
    client.post(f"/api/videos/{vid}/prompts",
                json={"frame": 0, "object": 1, "points": [[400, 220]], "labels": [1]})
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward"})
    assert wait_job(client, vid)["state"] == "done"
    whole = {(r["frame"], r["object"]): r["score"]
             for r in client.get(f"/api/videos/{vid}/review").json()["rows"]}
    real = svc.tracker._write_frame

    def write(job, frame, masks):
        real(job, frame, masks)
        if job.done >= 4:
            job.cancelled.set()

    svc.tracker._write_frame = write
    try:
        client.post(f"/api/videos/{vid}/track", json={"direction": "forward", "resume": False})
        assert wait_job(client, vid)["state"] == "cancelled"
    finally:
        del svc.tracker._write_frame
    svc.db.conn.execute("UPDATE frame_signals SET score = -1 WHERE frame >= 4")
    client.post(f"/api/videos/{vid}/track", json={"direction": "forward"})
    job = wait_job(client, vid)
    assert job["state"] == "done" and job["resumed"] == 4
    again = {(r["frame"], r["object"]): r["score"]
             for r in client.get(f"/api/videos/{vid}/review").json()["rows"]}
    assert again.keys() == whole.keys()
    assert [again[k] for k in sorted(again)] == pytest.approx([whole[k] for k in sorted(whole)])
