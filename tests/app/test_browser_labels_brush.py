"""Browser tests of the brush, the labels and same-name sessions (issue 19).

Chromium (headless, Playwright) on the real server with the nano model, on the synthetic
`disc` clip (disc_kit.py). What the page does is checked against what the server stored:
the mask after a brush or eraser stroke, the label in the COCO export, the sessions list.
"""

from __future__ import annotations

import json
import zipfile

from .browser_kit import (  # noqa: F401  (the *_fixture names: fixtures used by name)
    COUNT_MASK_JS,
    Page,
    browser_context_fixture,
    download,
    needs_chromium,
    open_path,
)
from .disc_kit import HEIGHT, WIDTH, disc_centre, disc_server_fixture  # noqa: F401

pytestmark = needs_chromium

SET_RADIUS_JS = """r => {
  const input = document.getElementById("brush-radius");
  input.value = String(r);
  input.dispatchEvent(new Event("input"));
}"""


def _opened(tab: Page, path: str = "disc") -> int:
    tab.page.goto(tab.server.url + "/")
    tab.wait_status("info")
    open_path(tab, path)
    return tab.video_id()


def _drag(tab: Page, points: list[tuple[float, float]], release: bool = True) -> None:
    """Press at the first point (frame pixels), move through the others, release."""
    page = tab.page
    box = page.locator("#prompt-canvas").bounding_box()

    def screen(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x * box["width"] / WIDTH, box["y"] + y * box["height"] / HEIGHT

    page.mouse.move(*screen(*points[0]))
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(*screen(x, y), steps=3)
    if release:
        page.mouse.up()


def test_brush_and_eraser_change_the_stored_mask(disc_server, browser_context):
    tab = Page(browser_context, disc_server, "brush")
    page = tab.page
    vid = _opened(tab)
    brush_posts = []
    page.on("request", lambda r: brush_posts.append(r) if r.url.endswith("/brush") else None)
    page.focus("#prompt-canvas")
    page.keyboard.press("b")
    assert page.get_attribute("#tool-brush", "aria-pressed") == "true"
    page.evaluate(SET_RADIUS_JS, 10)
    assert page.text_content("#brush-radius-value") == "10 px"

    # While the button is held the stroke shows on the canvas and nothing is sent yet.
    _drag(tab, [(20, 200), (60, 200), (100, 200), (150, 200)], release=False)
    page.wait_for_function(f"() => ({COUNT_MASK_JS})() > 1000")
    assert brush_posts == []
    tab.shot("painting")
    page.mouse.up()
    assert "Painted object 1 on frame 0" in tab.wait_status("info")
    assert len(brush_posts) == 1  # one POST for the whole stroke

    mask = disc_server.mask(vid, 0)
    assert mask[200, 20] == mask[200, 85] == mask[200, 150] == 1
    assert mask[215, 85] == 0 and mask[185, 85] == 0  # 15 px from the stroke, radius 10
    painted = int((mask == 1).sum())
    assert 2000 < painted < 4000, painted  # about 130 x 20 + pi 10^2
    assert tab.wait_mask_drawn(0) == painted  # the server's answer is what is drawn
    tab.shot("painted")

    # The eraser cuts the stroke where it crosses it, and only there.
    page.keyboard.press("e")
    assert page.get_attribute("#tool-eraser", "aria-pressed") == "true"
    _drag(tab, [(85, 180), (85, 220)])
    assert "Erased object 1 on frame 0" in tab.wait_status("info")
    mask = disc_server.mask(vid, 0)
    assert mask[200, 85] == 0 and mask[200, 40] == 1 and mask[200, 140] == 1
    assert tab.wait_mask_drawn(0) == int((mask == 1).sum())
    assert len(brush_posts) == 2

    # Undo takes the erasing back (the stroke is an edit like any other).
    page.keyboard.press("Control+z")
    assert "Undone" in tab.wait_status("info")
    assert disc_server.mask(vid, 0)[200, 85] == 1
    # Pressing the key of the tool that is on goes back to clicks.
    page.keyboard.press("e")
    assert page.get_attribute("#tool-points", "aria-pressed") == "true"
    tab.check_no_errors()
    page.close()


def test_label_chosen_in_the_page_is_in_the_coco_export(disc_server, browser_context, tmp_path):
    tab = Page(browser_context, disc_server, "labels")
    page = tab.page
    vid = _opened(tab)
    cx, cy = disc_centre(0)
    tab.click_frame(cx / WIDTH, cy / HEIGHT)
    assert "mask on frame 0" in tab.wait_status("info")

    page.fill("#label-name", "ball")
    page.fill("#label-yolo", "3")
    page.click("#label-add")
    assert "Label “ball” added" in tab.wait_status("info")
    (label,) = [lb for lb in disc_server.json("/api/labels")["labels"] if lb["name"] == "ball"]
    assert label["yolo_id"] == 3

    # The YOLO id edited in the list is stored.
    yolo = page.locator(f'#label-list li[data-label-id="{label["id"]}"] input.yolo')
    yolo.fill("5")
    yolo.press("Tab")
    tab.wait_status("info")
    assert [lb["yolo_id"] for lb in disc_server.json("/api/labels")["labels"]
            if lb["id"] == label["id"]] == [5]

    page.select_option('#object-list li[data-object-id="1"] select', label="ball")
    assert "is now “ball”" in tab.wait_status("info")
    assert disc_server.json(f"/api/videos/{vid}")["objects"][0]["label"] == label["id"]
    # The select shows the stored label after the list is rebuilt from the server.
    page.wait_for_function(
        "id => document.querySelector('#object-list li[data-object-id=\"1\"] select').value "
        "=== String(id)", arg=label["id"])
    tab.shot("labelled")

    coco = json.loads(download(tab, "coco", tmp_path).read_text())
    assert {c["id"]: c["name"] for c in coco["categories"]}[label["id"]] == "ball"
    assert coco["annotations"], coco
    assert {(a["category_id"], a["track_id"]) for a in coco["annotations"]} == {(label["id"], 1)}
    # The YOLO-seg button: frame 0's line has the class id typed in the label list.
    with zipfile.ZipFile(download(tab, "yolo", tmp_path)) as zf:
        (frame0,) = [n for n in zf.namelist() if n.endswith("labels/00000.txt")]
        assert zf.read(frame0).decode().split()[0] == "5"
    assert "left out" not in tab.wait_status("info")
    tab.check_no_errors()
    page.close()


def test_sessions_with_the_same_name_show_path_and_date(disc_server, browser_context):
    tab = Page(browser_context, disc_server, "sessions")
    page = tab.page
    first = _opened(tab)
    open_path(tab, "disc")
    second = tab.video_id()
    assert first != second
    videos = {v["id"]: v for v in disc_server.json("/api/videos")["videos"]}
    for vid in (first, second):
        where = page.locator(f'#video-list li[data-video-id="{vid}"] .where')
        text = where.inner_text()
        assert videos[vid]["location"] in text, text
        assert text.split()[-2].startswith("20") and ":" in text.split()[-1], text
        # A long path is cut, the line never runs out of the sidebar.
        assert page.evaluate(
            "id => { const li = document.querySelector(`#video-list li[data-video-id=\"${id}\"]`);"
            " return li.scrollWidth <= li.clientWidth; }", vid), text
    tab.shot("same-name")

    # Renamed apart, the second session no longer needs them.
    page.fill("#video-name", "disc, second take")
    page.press("#video-name", "Enter")
    assert "Renamed" in tab.wait_status("info")
    page.wait_for_function(
        "id => !document.querySelector(`#video-list li[data-video-id=\"${id}\"] .where`)",
        arg=second)
    tab.check_no_errors()
    page.close()


def test_label_changes_show_in_a_page_on_another_video(disc_server, browser_context):
    """Two tabs, each on its own session of the clip: a label added, renamed and deleted in
    one appears, changes and goes in the other's label list without a reload."""
    one = Page(browser_context, disc_server, "labels-one")
    other = Page(browser_context, disc_server, "labels-other")
    first, second = _opened(one), _opened(other)
    assert first != second
    loads = []
    other.page.on("request", lambda r: loads.append(r) if r.url.endswith("/api/labels") else None)

    one.page.fill("#label-name", "kite")
    one.page.click("#label-add")
    assert "Label “kite” added" in one.wait_status("info")
    (label,) = [lb for lb in disc_server.json("/api/labels")["labels"] if lb["name"] == "kite"]
    name_input = f'#label-list li[data-label-id="{label["id"]}"] input[type="text"]'
    other.page.wait_for_function(
        "sel => document.querySelector(sel)?.value === 'kite'", arg=name_input)

    one.page.fill(name_input, "kite surfer")
    one.page.press(name_input, "Enter")
    one.wait_status("info")
    other.page.wait_for_function(
        "sel => document.querySelector(sel)?.value === 'kite surfer'", arg=name_input)

    one.page.click(f'#label-list li[data-label-id="{label["id"]}"] button')  # confirm: accepted
    one.wait_status("info")
    other.page.wait_for_function(
        "id => !document.querySelector(`#label-list li[data-label-id=\"${id}\"]`)",
        arg=label["id"])
    assert len(loads) >= 3  # the other page fetched the labels again each time
    for tab in (one, other):
        tab.check_no_errors()
        tab.page.close()
