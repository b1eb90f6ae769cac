"""The page's motion checkbox: Track with it ticked asks the server for motion-aware tracking."""

from __future__ import annotations

from conftest import require_data

from .browser_kit import (  # noqa: F401  (the *_fixture names: fixtures used by name)
    Page,
    browser_context_fixture,
    needs_chromium,
    open_page,
    server_fixture,
)

pytestmark = needs_chromium


def test_the_motion_checkbox_tracks_motion_aware(server, browser_context):
    require_data("videos", "bedroom")
    tab = open_page(browser_context, server, "motion", "videos/bedroom")
    page = tab.page
    vid = tab.video_id()
    tab.seek(50)
    tab.click_frame(0.45, 0.55)
    assert "mask on frame 50" in tab.wait_status("info")
    page.select_option("#track-direction", "forward")
    assert not page.is_checked("#track-motion")  # off unless asked for
    page.check("#track-motion")
    job = tab.track("motion")
    assert (job["state"], job["total"], job["motion"]) == ("done", 10, True), job
    assert server.json(f"/api/videos/{vid}/track")["motion"] is True
    assert page.text_content("#track-label").endswith("· motion")
    tab.check_no_errors()
