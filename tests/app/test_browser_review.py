"""Browser tests of the review hints (issue 19): flagged frames, F / Shift+F, Review mode.

Chromium (headless, Playwright) on the real server with the nano model. A red disc that
vanishes half-way (disc_kit.py) is clicked on frame 0 and tracked forward; the frames the
server flags (GET /review) are where F and Shift+F must land, in frame order, and Review
mode must walk the server's `order`, marking each frame it shows as reviewed.
"""

from __future__ import annotations

from .browser_kit import (  # noqa: F401  (the *_fixture names: fixtures used by name)
    Page,
    Server,
    browser_context_fixture,
    needs_chromium,
    open_path,
)
from .disc_kit import HEIGHT, WIDTH, disc_centre, disc_server_fixture  # noqa: F401

pytestmark = needs_chromium

# RGB of the review strip at a frame's cell, in the lane's lower part (where both marks are).
STRIP_RGB_JS = """([frame, numFrames]) => {
  const c = document.getElementById("review-strip");
  const x = Math.floor((frame + 0.5) * c.width / numFrames);
  const d = c.getContext("2d").getImageData(x, Math.floor(c.height * 0.8), 1, 1).data;
  return [d[0], d[1], d[2]];
}"""


def _review(server: Server, vid: int) -> dict:
    return server.json(f"/api/videos/{vid}/review")


def _reviewed(server: Server, vid: int) -> dict[tuple[int, int], bool]:
    return {(r["frame"], r["object"]): r["reviewed"] for r in _review(server, vid)["rows"]}


def _tracked_disc(tab: Page) -> tuple[int, dict]:
    """Open `disc`, click the disc on frame 0, track forward; (video id, GET /review)."""
    page = tab.page
    page.goto(tab.server.url + "/")
    tab.wait_status("info")
    open_path(tab, "disc")
    vid = tab.video_id()
    cx, cy = disc_centre(0)
    tab.click_frame(cx / WIDTH, cy / HEIGHT)
    assert "mask on frame 0" in tab.wait_status("info")
    page.select_option("#track-direction", "forward")
    job = tab.track("tracked")
    assert job["state"] == "done", job
    review = _review(tab.server, vid)
    flagged = sorted({f for frames in review["flagged"].values() for f in frames})
    # The case this test is built on: the disc vanishes, so frames are flagged.
    assert len(flagged) >= 3, review["flagged"]
    # The page has the same flags as the server once tracking has ended.
    page.wait_for_function(
        "n => window.masklet.review.frames.length === n", arg=len(flagged))
    assert page.evaluate("() => window.masklet.review.frames") == flagged
    tab.settle()
    return vid, review


def test_f_and_shift_f_jump_to_the_flagged_frames(disc_server, browser_context):
    tab = Page(browser_context, disc_server, "review-keys")
    page = tab.page
    vid, review = _tracked_disc(tab)
    flagged = sorted({f for frames in review["flagged"].values() for f in frames})
    assert not page.locator("#review-strip").is_hidden()
    tab.seek(0)
    page.focus("#prompt-canvas")
    for frame in flagged:
        page.keyboard.press("f")
        tab.wait_frame(frame)
        assert page.evaluate("() => window.masklet.frame") == frame
        assert "flagged" in page.text_content("#review-info")
    tab.shot("last-flagged")
    # Past the last flagged frame: F stays and says so.
    page.keyboard.press("f")
    assert "no flagged frame after" in tab.wait_status("info")
    assert page.evaluate("() => window.masklet.frame") == flagged[-1]
    for frame in reversed(flagged[:-1]):
        page.keyboard.press("Shift+F")
        tab.wait_frame(frame)
    # A frame that is not flagged says nothing in the review line.
    tab.seek(0)
    assert page.text_content("#review-info") == ""
    # Jumping outside Review mode marks nothing reviewed.
    flagged_keys = {(r["frame"], r["object"]) for r in review["rows"] if r["flagged"]}
    assert not any(v for k, v in _reviewed(disc_server, vid).items() if k in flagged_keys)
    # The help lists the keys.
    help_text = page.text_content("#help")
    assert "next flagged frame" in help_text and "previous flagged frame" in help_text
    page.focus("#prompt-canvas")
    page.keyboard.press("?")
    assert page.evaluate("() => document.getElementById('help').open")
    tab.shot("help")
    page.keyboard.press("?")
    tab.check_no_errors()
    page.close()


def test_review_mode_walks_the_order_and_marks_reviewed(disc_server, browser_context):
    tab = Page(browser_context, disc_server, "review-mode")
    page = tab.page
    vid, review = _tracked_disc(tab)
    order = [(o["frame"], o["object"]) for o in review["order"]]
    assert len(order) >= 5, order  # the walk below visits five entries
    assert not any(_reviewed(disc_server, vid)[k] for k in order)
    n = disc_server.json(f"/api/videos/{vid}")["num_frames"]
    # A second page on the same video, not reviewing: it shows the marks as they are made.
    other = Page(browser_context, disc_server, "review-other")
    other.page.goto(f"{disc_server.url}/#video={vid}")
    other.page.wait_for_function(
        "() => document.getElementById('review-count').textContent.includes('0 reviewed')")
    page.focus("#prompt-canvas")
    page.keyboard.press("r")
    assert page.get_attribute("#review-btn", "aria-pressed") == "true"
    for i in range(3):
        if i:
            page.keyboard.press("f")
        frame, obj = order[i]
        tab.wait_frame(frame)
        assert page.evaluate("() => window.masklet.activeObject") == obj
        assert f"Review {i + 1}/{len(order)}" in tab.wait_status("info")
        # The frame shown in Review mode is stored as reviewed, the rest of the walk is not.
        reviewed = _reviewed(disc_server, vid)
        assert all(reviewed[k] for k in order[: i + 1]), i
        assert not any(reviewed[k] for k in order[i + 1:]), i
    assert page.text_content("#review-pos") == f"3 / {len(order)}"
    # Reviewed frames are drawn differently from those still to check: green, not rose.
    for tab_page in (page, other.page):
        tab_page.wait_for_function(
            "() => document.getElementById('review-count').textContent.includes('3 reviewed')")
    other.check_no_errors()
    other.page.close()
    done_rgb = page.evaluate(STRIP_RGB_JS, [order[0][0], n])
    todo_rgb = page.evaluate(STRIP_RGB_JS, [order[3][0], n])
    assert done_rgb[1] > done_rgb[0] and todo_rgb[0] > todo_rgb[1], (done_rgb, todo_rgb)
    tab.shot("review-mode")
    # Shift+F steps back through the walk; leaving the mode stops marking.
    page.keyboard.press("Shift+F")
    tab.wait_frame(order[1][0])
    page.keyboard.press("r")
    assert page.get_attribute("#review-btn", "aria-pressed") == "false"
    tab.seek(order[4][0])
    tab.settle()
    assert not _reviewed(disc_server, vid)[order[4]]
    # Back in Review mode, the walk resumes at the first entry not reviewed yet.
    page.focus("#prompt-canvas")
    page.keyboard.press("r")
    tab.wait_frame(order[3][0])
    tab.settle()
    assert _reviewed(disc_server, vid)[order[3]]
    tab.check_no_errors()
    page.close()
