"""The app refuses other sites (Host, Origin, Sec-Fetch-Site, the X-Masklet header) and
oversized or out-of-range input: a clear one-line 4xx, and nothing stored."""

from __future__ import annotations

import io
import re
import threading
import time

import numpy as np
import pytest
from PIL import Image

from .conftest import APP_HEADERS, TestClient, app_client, counts, create_app, wait_job

CLICK = {"frame": 0, "object": 1, "points": [[400, 220]], "labels": [1]}
CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
# What a page on another loopback port can make a browser send: a form or a no-cors fetch
# (no custom header), or a CORS request carrying the header from a foreign origin.
ATTACKS = {
    "form": {"Origin": "http://127.0.0.1:9999", "Sec-Fetch-Site": "same-site",
             "Content-Type": "application/x-www-form-urlencoded"},
    "no header": {},
    "foreign origin": {**APP_HEADERS, "Origin": "http://127.0.0.1:9999"},
    "null origin": {**APP_HEADERS, "Origin": "null"},
    "cross-site": {**APP_HEADERS, "Sec-Fetch-Site": "cross-site"},
    "same-site": {**APP_HEADERS, "Sec-Fetch-Site": "same-site"},
}


def one_line(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, response.text
    return detail


def prepared(client) -> int:
    """A video with object 1 and one click (so undo, track, exports have work to do)."""
    vid = client.post("/api/videos/open", json={"path": "clip"}).json()["id"]
    assert client.post(f"/api/videos/{vid}/objects", json={}).status_code == 201
    assert client.post(f"/api/videos/{vid}/prompts", json=CLICK).status_code == 200
    return vid


def png_bytes(h: int = 540, w: int = 960) -> bytes:
    mask = np.zeros((h, w), np.uint8)
    mask[100:200, 100:200] = 1
    out = io.BytesIO()
    Image.fromarray(mask).save(out, format="PNG")
    return out.getvalue()


def bare(svc, host: str = "127.0.0.1") -> TestClient:
    """A client that sends no X-Masklet header (what another site's form or fetch is)."""
    return TestClient(create_app(svc), base_url=f"http://{host}")


# ------------------------------------------------------------------------ host
@pytest.mark.parametrize("path", ["/", "/api/videos", "/api/info", "/index.html"])
def test_foreign_host_is_refused_on_every_route(svc, path):
    response = bare(svc, "evil.example").get(path)
    assert response.status_code == 403
    assert "evil.example" in one_line(response) and "--allow-host" in one_line(response)
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000"):
        assert bare(svc, host).get(path).status_code == 200, host


def test_rebinding_cannot_read_or_write(client, svc):
    vid = prepared(client)
    rebound = bare(svc, "attacker.example:8000")
    before = counts(svc)
    assert rebound.get(f"/api/videos/{vid}/masks/0").status_code == 403
    assert rebound.get(f"/api/videos/{vid}/frames/0").status_code == 403
    # Even with the header (a rebound page is same-origin with itself, so it can send it).
    assert rebound.post(f"/api/videos/{vid}/undo", headers=APP_HEADERS).status_code == 403
    assert counts(svc) == before


def test_allowed_hosts_are_served(make_service):
    svc = make_service(allowed_hosts=("annotate.lan", "0.0.0.0"))
    assert bare(svc, "annotate.lan:8443").get("/api/videos").status_code == 200
    assert bare(svc, "Annotate.LAN.").get("/").status_code == 200
    assert bare(svc, "other.lan").get("/").status_code == 403
    client = TestClient(create_app(svc), base_url="http://annotate.lan:8443",
                        headers=APP_HEADERS)
    # Behind a TLS proxy the page's origin is https: the host and port still match.
    response = client.post("/api/videos/open", json={"path": "clip"},
                           headers={"Origin": "https://annotate.lan:8443"})
    assert response.status_code == 201, response.text


def test_malformed_host_is_refused(svc):
    for host in ("", "a b", "x@127.0.0.1", "127.0.0.1:notaport"):
        response = bare(svc).get("/api/videos", headers={"Host": host})
        assert response.status_code in (400, 403), host
        one_line(response)


# ---------------------------------------------------------------------- origin
def attempts(vid: int) -> list[tuple[str, str, dict]]:
    """Every state-changing route with a body it would accept from the app's page."""
    url = f"/api/videos/{vid}"
    upload = {"files": {"file": ("x.png", png_bytes(), "image/png")}}
    return [
        ("POST", f"{url}/undo", {}),
        ("POST", f"{url}/redo", {}),
        ("POST", "/api/videos/upload", upload),
        ("POST", f"{url}/masks/import", {**upload, "data": {"frame": "1", "object": "1"}}),
        ("POST", f"{url}/track", {"content": b""}),
        ("POST", f"{url}/track/cancel", {}),
        ("POST", f"{url}/prompts", {"json": {**CLICK, "frame": 2}}),
        ("POST", f"{url}/prompts/clear", {"json": {"frame": 0, "object": 1}}),
        ("POST", "/api/videos/open", {"json": {"path": "clip"}}),
        ("PATCH", url, {"json": {"name": "renamed"}}),
        ("DELETE", url, {}),
        ("POST", f"{url}/objects", {"json": {}}),
        ("PATCH", f"{url}/objects/1", {"json": {"name": "x"}}),
        ("DELETE", f"{url}/objects/1", {}),
        ("POST", f"{url}/exports", {"json": {"format": "png"}}),
        ("POST", f"{url}/frames/3/prepare", {}),
        ("POST", f"{url}/brush", {"json": {"frame": 0, "object": 1, "mode": "paint",
                                           "radius": 9, "points": [[5, 5]]}}),
        ("POST", f"{url}/review/seen", {"json": {"frame": 0, "object": 1}}),
        ("POST", "/api/labels", {"json": {"name": "cat"}}),
        ("PATCH", "/api/labels/1", {"json": {"name": "dog"}}),
        ("DELETE", "/api/labels/1", {}),
    ]


def test_cross_origin_changes_are_refused_and_change_nothing(client, svc):
    vid = prepared(client)
    app = client.app
    covered = {(m, re.sub(r"\d+", "{}", p)) for m, p, _ in attempts(vid)}
    routes = {(m, re.sub(r"\{\w+\}", "{}", r.path)) for r in app.routes
              for m in getattr(r, "methods", ()) if m in CHANGING}
    assert routes <= covered, f"state-changing routes this test misses: {routes - covered}"
    attacker = bare(svc)
    before = counts(svc)
    for method, path, kwargs in attempts(vid):
        for attack, headers in ATTACKS.items():
            response = attacker.request(method, path, headers=headers, **kwargs)
            assert response.status_code == 403, (method, path, attack, response.text)
            one_line(response)
    assert counts(svc) == before
    assert svc.db.query_one("SELECT COUNT(*) FROM labels")[0] == 0
    assert client.get(f"/api/videos/{vid}/prompts").json()["prompts"][0]["points"] == \
        CLICK["points"]


def test_the_pages_own_requests_pass(client, svc):
    vid = prepared(client)
    same = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
    assert client.post(f"/api/videos/{vid}/undo", headers=same).status_code == 200
    assert client.post(f"/api/videos/{vid}/redo", headers={"Sec-Fetch-Site": "none"}
                       ).status_code == 200
    assert client.post(f"/api/videos/{vid}/track", content=b"", headers=same
                       ).status_code == 202
    assert wait_job(client, vid)["state"] == "done"


def test_no_cors_preflight_is_approved(client, svc):
    vid = prepared(client)
    response = bare(svc).options(f"/api/videos/{vid}/undo", headers={
        "Origin": "http://127.0.0.1:9999", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-masklet"})
    assert response.status_code >= 400
    assert not any(h.lower().startswith("access-control-allow") for h in response.headers)


def test_reads_from_other_sites_are_refused_but_the_page_can_be_linked(client, svc):
    vid = prepared(client)
    reader = bare(svc)
    for site in ("cross-site", "same-site"):
        response = reader.get(f"/api/videos/{vid}/frames/0", headers={"Sec-Fetch-Site": site})
        assert response.status_code == 403 and "other sites" in one_line(response)
        assert reader.get("/", headers={"Sec-Fetch-Site": site}).status_code == 200
    for site in ("same-origin", "none"):
        assert reader.get("/api/videos", headers={"Sec-Fetch-Site": site}).status_code == 200


# ----------------------------------------------------------------- body, points
def test_oversized_json_body_is_413(make_service):
    svc = make_service(max_json_mb=0.01)  # 10 KiB
    client = app_client(svc)
    vid = prepared(client)
    before = counts(svc)
    big = {**CLICK, "frame": 1, "points": [[1.5, 2.5]] * 2000}
    response = client.post(f"/api/videos/{vid}/prompts", json=big)
    assert response.status_code == 413 and "0.01 MB" in one_line(response)

    def chunks():  # no Content-Length: the limit holds while the body streams in
        yield b'{"frame": 1, "object": 1, "points": ['
        for _ in range(2000):
            yield b"[1.5, 2.5],"
        yield b"[1, 1]]}"

    response = client.post(f"/api/videos/{vid}/prompts", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "--max-json-mb" in one_line(response)
    assert counts(svc) == before
    # Uploads keep their own limit (--max-upload-mb), far above the JSON one.
    upload = client.post("/api/videos/upload", files={"file": ("m.png", png_bytes() * 4)})
    assert upload.status_code != 413, upload.text


def test_points_per_prompt_limit(client, svc, record_property):
    vid = prepared(client)
    url = f"/api/videos/{vid}/prompts"
    rng = np.random.default_rng(0)
    points = rng.uniform([0, 0], [960, 540], size=(101, 2)).round(1).tolist()
    before = counts(svc)
    response = client.post(url, json={**CLICK, "frame": 1, "points": points,
                                      "labels": [1] * 101})
    assert response.status_code == 422 and "at most 100 points" in one_line(response)
    assert counts(svc) == before
    start = time.perf_counter()
    response = client.post(url, json={**CLICK, "frame": 1, "points": points[:100],
                                      "labels": [1] * 100})
    seconds = time.perf_counter() - start
    assert response.status_code == 200, response.text
    record_property("hundred_point_prompt_s", round(seconds, 3))
    print(f"a 100-point prompt (nano, 960x540 frame, fresh frame) took {seconds:.3f} s")


def test_points_per_frame_limit(make_service):
    svc = make_service(max_points_per_frame=5)
    client = app_client(svc)
    vid = prepared(client)  # 1 point on frame 0
    url = f"/api/videos/{vid}/prompts"
    two = {**CLICK, "points": [[10, 10], [20, 20]], "labels": [1, 0]}
    assert client.post(url, json=two).status_code == 200
    assert client.post(url, json=two).status_code == 200  # 5 points now
    before = counts(svc)
    response = client.post(url, json=CLICK)
    assert response.status_code == 422 and "limit is 5" in one_line(response)
    assert counts(svc) == before
    # Another frame, another object or a cleared frame start again from zero.
    assert client.post(url, json={**two, "frame": 3}).status_code == 200
    assert client.post(f"{url}/clear", json={"frame": 0, "object": 1}).status_code == 200
    assert client.post(url, json=two).status_code == 200


def test_busy_model_is_503_and_tracking_waits(make_service):
    svc = make_service(model_wait_s=0.2)
    client = app_client(svc)
    vid = prepared(client)
    before = counts(svc)
    with svc.host.lock:  # another request holds the model
        response = client.post(f"/api/videos/{vid}/prompts", json={**CLICK, "frame": 4})
    assert response.status_code == 503 and "busy" in one_line(response)
    assert counts(svc) == before
    assert client.post(f"/api/videos/{vid}/prompts", json={**CLICK, "frame": 4}
                       ).status_code == 200
    # A tracking step waits for the model as long as it takes instead of failing.
    svc.host.lock.acquire()
    releaser = threading.Timer(1.0, svc.host.lock.release)
    releaser.start()
    assert client.post(f"/api/videos/{vid}/track", json={}).status_code == 202
    job = wait_job(client, vid)
    releaser.join()
    assert job["state"] == "done" and job["done"] == 8, job


# ------------------------------------------------------- non-finite, huge ints
NON_FINITE = [
    ("/prompts", b'{"frame": 1e400, "object": 1, "points": [[1, 1]], "labels": [1]}'),
    ("/prompts", b'{"frame": NaN, "object": 1, "points": [[1, 1]], "labels": [1]}'),
    ("/prompts", b'{"frame": 0, "object": 1, "points": [[1, 1]], "labels": [NaN]}'),
    ("/prompts", b'{"frame": 0, "object": 1, "points": [[1, 1]], "labels": [1],'
                 b' "expected_version": Infinity}'),
    ("/prompts", b'{"frame": 0, "object": 1, "box": [0, 0, Infinity, 5]}'),
    ("/exports", b'{"format": NaN}'),
    ("open", b'{"path": Infinity}'),
    ("/track", b'{"start": -Infinity}'),
    ("/prompts/clear", b'{"frame": -Infinity, "object": 1}'),
    ("/objects", b'{"id": NaN}'),
    ("/prompts", b'{"frame": 0, "object": 1, "points": [[1, 1]], "labels": [true]}'),
    ("/prompts", b'{"frame": 0, "object": true, "points": [[1, 1]], "labels": [1]}'),
    ("/prompts", b'{"frame": 0, "object": 9223372036854775808, "points": [[1, 1]],'
                 b' "labels": [1]}'),
    ("/prompts", b'{"frame": -9223372036854775809, "object": 1, "points": [[1, 1]],'
                 b' "labels": [1]}'),
    ("/track", b'{"max_frames": 99999999999999999999999}'),
    ("/prompts", b'{"frame": 0, "object": 1, "points": [[1, 1]], "labels": [1e400]}'),
]


def test_non_finite_and_out_of_range_numbers_are_422(client, svc):
    vid = prepared(client)
    before = counts(svc)
    for suffix, body in NON_FINITE:
        url = "/api/videos/open" if suffix == "open" else f"/api/videos/{vid}{suffix}"
        response = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (body, response.text)
        detail = one_line(response).lower()
        assert "nan" not in detail.split() and "inf" not in detail, detail
    assert counts(svc) == before


HUGE_READS = [
    "/api/videos/99999999999999999999",
    "/api/videos/9223372036854775808/timeline",
    "/api/videos/-9223372036854775809/metrics",
    "/api/videos/{vid}/frames/9223372036854775808",
    "/api/videos/{vid}/masks/18446744073709551616",
    "/api/videos/{vid}/masks/18446744073709551616/rle",
    "/api/videos/{vid}/prompts?frame=9223372036854775808",
    "/api/videos/{vid}/prompts?object=-99999999999999999999",
    "/api/videos/9223372036854775807",
    "/api/videos/{vid}/frames/9223372036854775807",
    "/api/videos/{vid}/prompts?object=9223372036854775807",
]


def test_huge_integers_are_404_or_422(client):
    vid = prepared(client)
    for path in HUGE_READS:
        response = client.get(path.format(vid=vid))
        assert response.status_code in (404, 422), (path, response.text)
        one_line(response)


def test_huge_integers_in_changes_store_nothing(client, svc):
    vid = prepared(client)
    before = counts(svc)
    huge = "9223372036854775808"
    for method, path, kwargs in [
            ("DELETE", f"/api/videos/{huge}", {}),
            ("PATCH", f"/api/videos/{vid}/objects/{huge}", {"json": {"name": "x"}}),
            ("DELETE", f"/api/videos/{vid}/objects/-{huge}0", {}),
            ("POST", f"/api/videos/{huge}/undo", {}),
            ("POST", f"/api/videos/{vid}/masks/import",
             {"files": {"file": ("m.png", png_bytes())}, "data": {"frame": huge}}),
            ("POST", f"/api/videos/{vid}/masks/import",
             {"files": {"file": ("m.png", png_bytes())}, "data": {"frame": "0", "object": huge}}),
            ("POST", f"/api/videos/{vid}/masks/import",
             {"files": {"file": ("m.png", png_bytes())}, "data": {"frame": "9" * 5000}})]:
        response = client.request(method, path, **kwargs)
        assert response.status_code in (400, 404, 422), (path, response.text)
        assert len(one_line(response)) < 400
    assert counts(svc) == before


def test_serve_options_reach_the_app(tmp_path, monkeypatch):
    """`masklet serve` passes --allow-host and the limits to the app it serves."""
    import uvicorn
    from click.testing import CliRunner

    from masklet.cli import main

    served = {}

    def fake_run(self, sockets=None):  # record the app instead of serving it
        served["app"] = self.config.app
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    result = CliRunner().invoke(main, [
        "serve", "--port", "0", "--data-dir", str(tmp_path / "data"), "--roots", str(tmp_path),
        "--allow-host", "annotate.lan", "--allow-host", "box.local", "--max-json-mb", "0.5",
        "--max-points-per-prompt", "7", "--max-points-per-frame", "9", "--model-wait-s", "2"])
    assert result.exit_code == 0, result.output
    config = served["app"].state.service.config
    assert config.allowed_hosts == ("127.0.0.1", "annotate.lan", "box.local")
    assert (config.max_json_mb, config.max_points_per_prompt, config.max_points_per_frame,
            config.model_wait_s) == (0.5, 7, 9, 2.0)
    assert bare(served["app"].state.service, "box.local").get("/").status_code == 200
