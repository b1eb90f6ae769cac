"""Browser tests of the annotation page: Debian's chromium, headless, driven by Playwright.

The annotation loop on a video, an upload with two tabs, photos with an imported mask,
and a server restart under an open page (helpers and fixtures: browser_kit.py).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from conftest import require_data

from masklet.app.server import create_app
from masklet.app.service import AnnotationService, AppConfig

from .browser_kit import (  # noqa: F401  (the *_fixture names: fixtures used by name)
    Page,
    Server,
    browser_context_fixture,
    download,
    needs_chromium,
    open_path,
    prompts_of,
    server_fixture,
)

pytestmark = needs_chromium


def test_video_click_track_correct_export_reload(server, browser_context, tmp_path):
    """The annotation loop on a real video, and the work still there after a reload."""
    require_data("videos", "bedroom")
    tab = Page(browser_context, server, "video")
    page = tab.page
    page.goto(server.url + "/")
    tab.wait_status("info")

    # A path outside the roots is refused with the server's message, nothing opened.
    page.fill("#path-input", "/etc")
    page.click("#path-open")
    message = tab.wait_status("error")
    assert message.startswith("Error:") and "outside" in message, message
    assert server.json("/api/videos")["videos"] == []
    tab.shot("refused-path")

    text = open_path(tab, "videos/bedroom")
    assert "60 frames" in text, text
    vid = tab.video_id()
    tab.wait_frame(0)
    tab.shot("opened")

    # A click on frame 20 makes an object, stores the click and draws the stored mask.
    tab.seek(20)
    tab.click_frame(0.45, 0.55)
    text = tab.wait_status("info")
    assert "mask on frame 20" in text, text
    drawn = tab.wait_mask_drawn(20)
    assert drawn > 0
    prompts = prompts_of(server, vid, 20)
    assert [p["labels"] for p in prompts] == [[1]]
    assert page.locator("#object-list li.object").count() == 1
    tab.shot("clicked")

    # Rename it; the server keeps the name.
    name = page.locator("#object-list li.object input[type=text]")
    name.fill("child")
    name.press("Enter")
    tab.wait_status("info")
    assert [o["name"] for o in server.json(f"/api/videos/{vid}")["objects"]] == ["child"]

    # Track both ways; the progress bar moves with the server's events.
    page.evaluate("""() => {
      window.seenProgress = [];
      window.masklet.events.addEventListener("progress",
        (e) => window.seenProgress.push(JSON.parse(e.data).job.done));
    }""")
    job = tab.track("tracking")
    assert job["state"] == "done", job
    seen = page.evaluate("() => window.seenProgress")
    assert any(0 < done < job["total"] for done in seen), seen
    assert page.eval_on_selector("#track-progress", "p => [p.value, p.max]") == [job["total"]] * 2
    masked = server.json(f"/api/videos/{vid}/timeline")["masked"]
    assert {"0", "59"} <= set(masked), sorted(masked)

    # Scrub (keyboard) to a later frame: the tracked mask is drawn there.
    page.focus("#prompt-canvas")
    page.keyboard.press("End")
    assert tab.wait_mask_drawn(59) > 0
    page.keyboard.press("Shift+ArrowLeft")
    later = tab.wait_mask_drawn(49)
    assert later > 0
    tab.wait_flags("tracked")
    tab.shot("scrubbed")

    # Correct frame 49 with a negative click (shift); undo and redo it from the keyboard.
    tab.click_frame(0.9, 0.1, modifiers=["Shift"])
    assert "mask on frame 49" in tab.wait_status("info")
    assert [p["labels"] for p in prompts_of(server, vid, 49)] == [[0]]
    tab.wait_mask_drawn(49)
    tab.wait_flags("prompted")
    page.keyboard.press("Control+z")
    assert "Undone" in tab.wait_status("info")
    assert prompts_of(server, vid, 49) == []
    page.keyboard.press("Control+Shift+Z")
    assert "Redone" in tab.wait_status("info")
    assert [p["labels"] for p in prompts_of(server, vid, 49)] == [[0]]
    tab.wait_mask_drawn(49)
    tab.shot("corrected")

    # Track again after the correction, forward only: from the first prompted frame (20).
    page.select_option("#track-direction", "forward")
    job = tab.track("retracking")
    assert job["state"] == "done" and job["direction"] == "forward", job
    assert job["total"] == 40, job
    tab.wait_status("info")
    tab.shot("retracked")

    # Export: the downloads are the stored masks in the promised formats.
    coco = json.loads(download(tab, "coco", tmp_path).read_text())
    assert len(coco["annotations"]) == len(server.json(f"/api/videos/{vid}/timeline")["masked"])
    with zipfile.ZipFile(download(tab, "davis", tmp_path)) as archive:
        pngs = [n for n in archive.namelist() if n.endswith(".png")]
    assert len(pngs) == 60
    assert page.locator("#export-links a").count() == 2
    tab.shot("exported")

    # Reload: the same video, frame, object, prompts, masks and exports come back.
    objects = page.evaluate("() => window.masklet.video.objects.length")
    page.reload()
    tab.wait_status("info")
    assert tab.wait_mask_drawn(49) == np.count_nonzero(server.mask(vid, 49))
    assert page.evaluate("() => window.masklet.video.objects.length") == objects
    assert page.input_value("#object-list li.object input[type=text]") == "child"
    assert page.locator("#export-links a").count() == 2
    metrics = server.json(f"/api/videos/{vid}/metrics")["video"]
    assert metrics["clicks"] == 2 and metrics["edited_frames"] == 2, metrics
    page.wait_for_function(
        "() => document.querySelector('#metrics dd') && "
        "document.querySelector('#metrics dd').textContent === '2'")
    assert "Clicks per clicked frame" in page.inner_text("#metrics")
    tab.shot("reloaded")

    # The help lists the shortcuts; "?" opens it over the page, Esc closes it.
    page.focus("#prompt-canvas")
    page.keyboard.press("?")
    help_text = page.locator("#help").inner_text()
    assert page.locator("#help").evaluate("d => d.open")
    assert "Ctrl+Z" in help_text.replace(" ", "") and "negative point" in help_text
    tab.shot("help")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.getElementById('help').open")
    tab.check_no_errors()


def test_upload_two_tabs_cancel(server, browser_context, tmp_path):
    """An uploaded MP4: right click, a box, a second tab kept in step, tracking cancelled."""
    mp4 = require_data("videos", "coffee.mp4")
    tab = Page(browser_context, server, "upload")
    page = tab.page
    page.goto(server.url + "/")
    tab.wait_status("info")

    # A non-video upload is refused with the server's 4xx message; nothing is opened.
    page.set_input_files("#upload-file", files=[{
        "name": "notes.mp4", "mimeType": "video/mp4", "buffer": b"not a video at all"}])
    message = tab.wait_status("error")
    assert message.startswith("Error:"), message
    assert not page.evaluate("() => window.masklet.video")
    tab.shot("upload-refused")

    page.set_input_files("#upload-file", str(mp4))
    text = tab.wait_status("info")
    assert "287 frames" in text, text
    vid = tab.video_id()
    tab.click_frame(0.5, 0.5)
    assert "mask on frame 0" in tab.wait_status("info")
    assert tab.wait_mask_drawn(0) > 0
    # A right click is a negative point (the demo model may then leave no mask at all).
    tab.click_frame(0.1, 0.1, button="right")
    assert "mask on frame 0" in tab.settle()[0]
    assert [p["labels"] for p in prompts_of(server, vid, 0)] == [[1], [0]]
    tab.wait_mask_drawn(0)
    tab.shot("uploaded-clicked")

    # A second tab on the same video follows the first one's edits.
    other = Page(browser_context, server, "second-tab")
    other.page.goto(f"{server.url}/#video={vid}&frame=0")
    other.wait_status("info")
    other.wait_mask_drawn(0)
    page.focus("#prompt-canvas")
    page.keyboard.press("n")
    tab.wait_status("info")
    box = page.locator("#prompt-canvas").bounding_box()
    page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.2 * box["height"])
    page.mouse.down()
    page.mouse.move(box["x"] + 0.8 * box["width"], box["y"] + 0.5 * box["height"], steps=5)
    page.mouse.up()
    assert "object 2: " in tab.wait_status("info")
    boxes = [p["box"] for p in prompts_of(server, vid, 0) if p["object"] == 2]
    assert len(boxes) == 1 and boxes[0][2] > boxes[0][0] and boxes[0][3] > boxes[0][1], boxes
    other.page.wait_for_function(
        "() => document.querySelectorAll('#object-list li.object').length === 2")
    other.wait_mask_drawn(0)
    other.shot("followed")
    page.keyboard.press("1")  # number keys pick objects in list order
    assert page.evaluate("() => window.masklet.activeObject") == 1
    page.keyboard.press("2")
    assert page.evaluate("() => window.masklet.activeObject") == 2

    # Tracking can be cancelled; both tabs see it end, the frames done are kept.
    page.click("#track-btn")
    page.wait_for_function("() => window.masklet.job && window.masklet.job.done > 2")
    page.click("#cancel-btn")
    page.wait_for_function("() => window.masklet.job.state === 'cancelled'")
    assert "cancelled" in tab.wait_status("info")
    other.page.wait_for_function(
        "() => window.masklet.job && window.masklet.job.state === 'cancelled'")
    job = page.evaluate("() => window.masklet.job")
    assert 0 < job["done"] < job["total"], job
    masked = server.json(f"/api/videos/{vid}/timeline")["masked"]
    assert len(masked) >= job["done"] - 1, (len(masked), job)  # the frames tracked are kept
    tab.shot("cancelled")
    sav = json.loads(download(tab, "sav", tmp_path).read_text())
    assert sav["masklet_id"] == [1, 2] and len(sav["masklet"]) == 287

    # Deleting an object (after the confirmation) removes it in both tabs.
    page.locator('#object-list li[data-object-id="2"] button').click()
    tab.wait_status("info")
    assert [o["id"] for o in server.json(f"/api/videos/{vid}")["objects"]] == [1]
    other.page.wait_for_function(
        "() => document.querySelectorAll('#object-list li.object').length === 1")
    tab.check_no_errors()
    other.check_no_errors()
    other.page.close()
    page.close()


def test_images_click_and_import(server, browser_context, tmp_path):
    """A folder of photos opens as separate images: a click, and a mask imported from a PNG."""
    require_data("images")
    tab = Page(browser_context, server, "images")
    page = tab.page
    page.goto(server.url + "/")
    tab.wait_status("info")
    # Browse the roots to the photo folder and open it as separate images.
    page.locator("#browse-list button.link").first.click()
    page.wait_for_selector("#browse-list li:has-text('images/')")
    page.check("#path-as-images")
    page.locator("#browse-list li:has-text('images/') button.small").click()
    text = tab.wait_status("info")
    assert "3 image(s)" in text, text
    vid = tab.video_id()
    assert page.locator("#track-bar").evaluate("e => getComputedStyle(e).visibility") == "hidden"
    page.focus("#prompt-canvas")
    page.keyboard.press("ArrowRight")
    tab.wait_frame(1)
    tab.click_frame(0.5, 0.5)
    assert "mask on frame 1" in tab.wait_status("info")
    assert tab.wait_mask_drawn(1) > 0
    tab.shot("clicked")
    # C clears the active object's prompts (and so its mask) on this photo.
    page.keyboard.press("c")
    assert "Cleared" in tab.wait_status("info")
    assert prompts_of(server, vid, 1) == []
    assert tab.wait_mask_drawn(1) == 0

    # The session can be renamed from the top bar.
    page.fill("#video-name", "photos")
    page.press("#video-name", "Enter")
    assert "Renamed" in tab.wait_status("info")
    assert server.json(f"/api/videos/{vid}")["name"] == "photos"

    # Import a PNG as the active object's mask on the last photo.
    page.focus("#prompt-canvas")
    page.keyboard.press("End")
    last = page.evaluate("() => window.masklet.video.num_frames - 1")
    tab.wait_frame(last)
    width, height = page.evaluate(f"() => window.masklet.video.frame_sizes[{last}]")
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: height // 2, width // 4: width // 2] = 255
    png = tmp_path / "mask.png"
    Image.fromarray(mask).save(png)
    page.set_input_files("#import-file", str(png))
    assert "Imported mask.png" in tab.wait_status("info")
    assert [p["kind"] for p in prompts_of(server, vid, last)] == ["mask"]
    assert tab.wait_mask_drawn(last) > 0
    tab.shot("imported")
    tab.check_no_errors()
    page.close()


@contextmanager
def _serve_on(svc: AnnotationService, port: int) -> Iterator[str]:
    """Like `live_server`, on a given port (0: any): a restart must come back on the same one."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(create_app(svc), log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_server_restart_keeps_the_work(nano, browser_context, tmp_path):
    """The server stops and starts again on the same data: the open page reconnects."""
    data = require_data()
    require_data("videos", "bedroom")
    config = AppConfig(data_dir=tmp_path / "data", roots=[data])
    first = AnnotationService(config, nano)
    try:
        with _serve_on(first, 0) as url:
            server = Server(url, config.data_dir)
            tab = Page(browser_context, server, "restart")
            page = tab.page
            page.goto(url + "/")
            tab.wait_status("info")
            open_path(tab, "videos/bedroom")
            vid = tab.video_id()
            tab.click_frame(0.45, 0.55)
            assert "mask on frame 0" in tab.wait_status("info")
            drawn = tab.wait_mask_drawn(0)
    finally:
        first.close()
    # The page notices the server is gone and says so.
    page.wait_for_function("() => document.getElementById('status').dataset.kind === 'error'")
    assert "Lost the server connection" in tab.status()[0]
    tab.shot("server-down")

    second = AnnotationService(config, nano)
    try:
        with _serve_on(second, int(url.rsplit(":", 1)[1])):
            page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('again')",
                timeout=30_000)
            assert tab.wait_mask_drawn(0) == drawn
            assert [p["labels"] for p in prompts_of(server, vid, 0)] == [[1]]
            page.reload()
            tab.wait_status("info")
            assert tab.wait_mask_drawn(0) == drawn
            tab.shot("server-back")
            tab.check_no_errors()
            page.close()
    finally:
        second.close()
