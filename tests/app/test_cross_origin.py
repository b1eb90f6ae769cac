"""Other sites cannot use the app (issue 15): cross-origin changes and DNS rebinding.

A hostile page, served on another loopback port, is opened in Chromium and tries every
state-changing route of the app the two ways a page of another origin can: `fetch` with
``mode: "no-cors"`` (no custom header, a body without Content-Type that FastAPI would read
as JSON, multipart forms) and auto-submitted HTML forms (empty, multipart with a file set
through DataTransfer, text/plain shaped like JSON). Nothing may change: not a row, a
version, an upload, an export or a job. PUT/PATCH/DELETE are not in the list: neither a
no-cors fetch nor a form can send them. The app's own page, in the same browser, then
still undoes a click.

A rebinding page reaches the app under a foreign name: a request with ``Host:
evil.example`` (raw HTTP, as the browser would send it after rebinding) is refused,
reading or changing.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from .browser_kit import (  # noqa: F401  (browser_context_fixture: a fixture used by name)
    Page,
    Server,
    browser_context_fixture,
    needs_chromium,
    prompts_of,
)
from .conftest import APP_HEADERS, counts, live_server

# The hostile page's script: every attempt in turn (one at a time, so each meets the state
# the previous left), then `window.attackDone`. `%(...)s` are filled by `_hostile_html`.
HOSTILE_JS = r"""
const APP = %(app)s, VID = %(vid)d, OBJ = %(obj)d;
const PNG = Uint8Array.from(atob(%(png)s), (c) => c.charCodeAt(0));
const FILE = () => new File([PNG], "mask.png", { type: "image/png" });
// A Blob with no type: the request carries no Content-Type at all (allowed in no-cors).
const json = (o) => new Blob([JSON.stringify(o)]);
const form = (fields) => {
  const f = new FormData();
  for (const [k, v] of fields) f.append(k, v === PNG ? FILE() : v);
  return f;
};
const V = `/api/videos/${VID}`;
const PROMPT = { frame: 2, object: OBJ, points: [[480, 270]], labels: [1] };
// [path, no-cors fetch body, form enctype, form fields]; JSON bodies as text/plain forms.
const plain = (o) => { const s = JSON.stringify(o); return [[s.slice(0, -1) + ',"x":"', '"}']]; };
const ATTEMPTS = [
  [`${V}/undo`, undefined, "application/x-www-form-urlencoded", []],
  [`${V}/redo`, undefined, "application/x-www-form-urlencoded", []],
  ["/api/videos/upload", form([["file", PNG]]), "multipart/form-data", [["file", PNG]]],
  [`${V}/masks/import`, form([["file", PNG], ["frame", "0"], ["object", String(OBJ)]]),
   "multipart/form-data", [["file", PNG], ["frame", "0"], ["object", String(OBJ)]]],
  [`${V}/masks/import`, form([["file", PNG], ["frame", "1"]]),
   "multipart/form-data", [["file", PNG], ["frame", "1"]]],
  [`${V}/prompts`, json(PROMPT), "text/plain", plain(PROMPT)],
  [`${V}/prompts/clear`, json({ frame: 0, object: OBJ }), "text/plain",
   plain({ frame: 0, object: OBJ })],
  [`${V}/objects`, json({ name: "evil" }), "application/x-www-form-urlencoded", []],
  ["/api/videos/open", json({ path: "clip" }), "text/plain", plain({ path: "clip" })],
  [`${V}/exports`, json({ format: "coco" }), "text/plain", plain({ format: "coco" })],
  [`${V}/frames/0/prepare`, undefined, "application/x-www-form-urlencoded", []],
  [`${V}/track`, undefined, "application/x-www-form-urlencoded", []],
  [`${V}/track/cancel`, undefined, "application/x-www-form-urlencoded", []],
];
let frames = 0;
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

async function viaFetch(path, body) {
  try {
    const r = await fetch(APP + path, { method: "POST", mode: "no-cors", body });
    return `fetch ${path}: ${r.type}`;
  } catch (err) {
    return `fetch ${path}: ${err}`;
  }
}

async function viaForm(path, enctype, fields) {
  const frame = document.createElement("iframe");
  frame.name = `target${++frames}`;
  document.body.append(frame);
  const f = document.createElement("form");
  Object.assign(f, { method: "POST", action: APP + path, target: frame.name, enctype });
  for (const [name, value] of fields) {
    const input = document.createElement("input");
    input.name = name;
    if (value === PNG) {
      input.type = "file";
      const files = new DataTransfer();
      files.items.add(FILE());
      input.files = files.files;
    } else {
      input.type = "hidden";
      input.value = value;
    }
    f.append(input);
  }
  document.body.append(f);
  await pause(20); // the iframe's own about:blank load is over
  const loaded = new Promise((resolve) => {
    frame.addEventListener("load", () => resolve("loaded"), { once: true });
    setTimeout(() => resolve("timed out"), 15000);
  });
  f.submit();
  return `form ${path}: ${await loaded}`;
}

(async () => {
  const log = [];
  for (const [path, body] of ATTEMPTS) log.push(await viaFetch(path, body));
  for (const [path, , enctype, fields] of ATTEMPTS) log.push(await viaForm(path, enctype, fields));
  window.attackLog = log;
  window.attackDone = true;
})();
"""


def _png(width: int = 960, height: int = 540) -> bytes:
    """A grey PNG the size of the clip's frames with a square of 255 (a valid mask)."""
    mask = np.zeros((height, width), np.uint8)
    mask[100:300, 200:500] = 255
    out = io.BytesIO()
    Image.fromarray(mask).save(out, format="PNG")
    return out.getvalue()


def _hostile_html(app_url: str, vid: int, obj: int) -> bytes:
    script = HOSTILE_JS % {"app": json.dumps(app_url), "vid": vid, "obj": obj,
                           "png": json.dumps(base64.b64encode(_png()).decode())}
    page = f"<!doctype html><meta charset=utf-8><title>hostile</title><script>{script}</script>"
    return page.encode()


@contextmanager
def _hostile_site(html: bytes) -> Iterator[str]:
    """Serve `html` at / on another loopback port (a thread, stopped afterwards)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body, status = (html, 200) if self.path == "/" else (b"", 404)
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _annotated(server: Server) -> tuple[int, int]:
    """Open the clip, add an object and a click on frame 0 (as the page would): (video, object)."""
    vid = server.post("/api/videos/open", {"path": "clip"})["id"]
    obj = server.post(f"/api/videos/{vid}/objects", {})["object"]["id"]
    server.post(f"/api/videos/{vid}/prompts",
                {"frame": 0, "object": obj, "points": [[480, 270]], "labels": [1]})
    return vid, obj


def _snapshot(svc, server: Server, vid: int) -> dict:
    """Everything a cross-site request could have changed."""
    return {"counts": counts(svc), "videos": server.json("/api/videos"),
            "detail": server.json(f"/api/videos/{vid}"),
            "prompts": [prompts_of(server, vid, f) for f in range(3)],
            "exports": server.json(f"/api/videos/{vid}/exports"),
            "job": server.json(f"/api/videos/{vid}/track")}


@needs_chromium
def test_another_site_cannot_change_anything(make_service, browser_context):
    svc = make_service()
    with live_server(svc) as url:
        server = Server(url, svc.data_dir)
        vid, obj = _annotated(server)
        before = _snapshot(svc, server, vid)
        with _hostile_site(_hostile_html(url, vid, obj)) as hostile:
            tab = Page(browser_context, server, "hostile")
            tab.page.goto(hostile + "/")
            tab.page.wait_for_function("() => window.attackDone === true", timeout=120_000)
            log = tab.page.evaluate("() => window.attackLog")
            tab.page.close()
        assert len(log) == 26 and not [line for line in log if "timed out" in line], log
        after = _snapshot(svc, server, vid)
        assert after == before

        # The app's own page, in the same browser, still makes changes.
        tab = Page(browser_context, server, "own-page")
        tab.page.goto(f"{url}/#video={vid}&frame=0")
        tab.wait_status("info")
        tab.page.focus("#prompt-canvas")
        tab.page.keyboard.press("Control+z")
        assert "Undone" in tab.wait_status("info")
        assert prompts_of(server, vid, 0) == []
        tab.check_no_errors()
        tab.page.close()


def _raw(port: int, method: str, path: str, host: str, **headers: str) -> tuple[int, bytes]:
    """One request with exactly this Host header (as a browser sends it after rebinding)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, headers={"Host": host, **headers})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_foreign_host_is_refused(make_service):
    """DNS rebinding: the app answers nothing to a foreign Host, and changes nothing."""
    svc = make_service()
    with live_server(svc) as url:
        server = Server(url, svc.data_dir)
        vid, _ = _annotated(server)
        port = int(url.rsplit(":", 1)[1])
        for name in ("127.0.0.1", "localhost"):  # the app's own names are served
            status, body = _raw(port, "GET", "/api/videos", f"{name}:{port}")
            assert status == 200 and b'"clip"' in body, (name, status, body)
        before = _snapshot(svc, server, vid)
        for path in ("/api/videos", f"/api/videos/{vid}", f"/api/videos/{vid}/frames/0",
                     f"/api/videos/{vid}/masks/0", f"/api/videos/{vid}/prompts"):
            status, body = _raw(port, "GET", path, f"evil.example:{port}")
            assert status in (400, 403, 421), (path, status, body[:200])
            assert b"clip" not in body and not body.startswith(b"\xff\xd8"), (path, body[:200])
        # After rebinding, the hostile page is "same-origin" and may add any header.
        evil = f"http://evil.example:{port}"
        status, body = _raw(port, "POST", f"/api/videos/{vid}/undo", f"evil.example:{port}",
                            Origin=evil, **{"Sec-Fetch-Site": "same-origin", **APP_HEADERS})
        assert status in (400, 403, 421), (status, body)
        assert _snapshot(svc, server, vid) == before
