"""What the browser tests share: the app on a loopback port, Chromium, and one tab's checks.

The real server (`masklet.app.server.create_app` over an `AnnotationService` with the
bundled nano model, roots: ../shared/data) runs in a thread on a free loopback port; the
page is used the way a person would (clicks on the frame, buttons, keys), and what it
draws is compared with what the server stored. Screenshots of every step go to
test-artifacts/browser/. Test modules import the fixtures `server` and `browser_context`
from here and mark themselves with `needs_chromium`.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import require_data

from masklet.app.service import AnnotationService, AppConfig
from masklet.bundled import bundled_preset

from .conftest import APP_HEADERS, live_server

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
# Headless and offline: no GPU, no sign-in, no background traffic, a throw-away profile.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 20_000

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"Debian's chromium is not installed at {CHROMIUM} (apt-get install chromium)")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright (test extra) is not installed")

# Counts the mask canvas's drawn (non-transparent) pixels.
COUNT_MASK_JS = """() => {
  const c = document.getElementById("mask-canvas");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
  return n;
}"""


@dataclass
class Server:
    """A running app: its base URL and the folder that holds its database."""

    url: str
    data_dir: Path

    def get(self, path: str) -> bytes:
        import httpx

        response = httpx.get(self.url + path, timeout=30)
        response.raise_for_status()
        return response.content

    def post(self, path: str, body: dict | None = None) -> dict:
        """A state change as the page makes it (with the app's own header); its JSON."""
        import httpx

        response = httpx.post(self.url + path, json=body, headers=APP_HEADERS, timeout=30)
        response.raise_for_status()
        return response.json()

    def json(self, path: str):
        return json.loads(self.get(path))

    def mask(self, video_id: int, frame: int) -> np.ndarray:
        """The stored label map of a frame ([H, W] uint8, 0 = no object)."""
        png = self.get(f"/api/videos/{video_id}/masks/{frame}")
        return np.array(Image.open(io.BytesIO(png)))


@pytest.fixture(scope="module", name="server")
def server_fixture(nano) -> Iterator[Server]:
    """The app over the real data folder, with the nano model, on a loopback port."""
    data = require_data()
    data_dir = Path(tempfile.mkdtemp(prefix="masklet-browser-"))
    config = AppConfig(data_dir=data_dir, roots=[data], model_name=bundled_preset(),
                       demo_model=True)
    service = AnnotationService(config, nano)
    try:
        with live_server(service) as url:
            yield Server(url, data_dir)
    finally:
        service.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module", name="browser_context")
def browser_context_fixture():
    with tempfile.TemporaryDirectory(prefix="masklet-chromium-") as profile, \
            sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            accept_downloads=True, viewport={"width": 1400, "height": 860})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


class Page:
    """One browser tab on the app, with the checks the tests share."""

    def __init__(self, context, server: Server, name: str) -> None:
        self.page = context.new_page()
        self.server = server
        self.name = name
        self.errors: list[str] = []
        self.page.on("pageerror", lambda err: self.errors.append(f"page error: {err}"))
        self.page.on("dialog", lambda dialog: dialog.accept())
        self.shots: list[Path] = []

    def shot(self, step: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{len(self.shots) + 1:02d}-{step}.png"
        self.page.screenshot(path=str(path))
        self.shots.append(path)

    def status(self) -> tuple[str, str]:
        out = self.page.locator("#status")
        return out.inner_text(), out.get_attribute("data-kind")

    def settle(self) -> tuple[str, str]:
        """Wait until nothing is pending or busy; the status line's (text, kind)."""
        self.page.wait_for_function(
            "() => document.body.dataset.started && window.masklet.pending === 0 && "
            "document.getElementById('status').dataset.kind !== 'busy'")
        return self.status()

    def wait_status(self, kind: str) -> str:
        """settle(); the status line must then be of `kind`. Its text."""
        text, got = self.settle()
        assert got == kind, f"status {got!r} (wanted {kind!r}): {text}"
        return text

    def video_id(self) -> int:
        return self.page.evaluate("() => window.masklet.video.id")

    def wait_frame(self, frame: int) -> None:
        self.page.wait_for_function(
            "f => document.getElementById('stage').dataset.frame === String(f)", arg=frame)

    def wait_mask_drawn(self, frame: int) -> int:
        """Wait until the canvas shows the server's mask of `frame`; its pixel count."""
        self.wait_frame(frame)
        stored = int(np.count_nonzero(self.server.mask(self.video_id(), frame)))
        self.page.wait_for_function(f"n => ({COUNT_MASK_JS})() === n", arg=stored)
        return stored

    def wait_flags(self, word: str) -> None:
        """Wait until the frame's flags (from the timeline) say `word`."""
        self.page.wait_for_function(
            "w => document.getElementById('frame-flags').textContent.includes(w)", arg=word)

    def click_frame(self, fx: float, fy: float, **kwargs) -> None:
        """Click the frame at (fx, fy), fractions of its width and height."""
        canvas = self.page.locator("#prompt-canvas")
        box = canvas.bounding_box()
        canvas.click(position={"x": fx * box["width"], "y": fy * box["height"]}, **kwargs)

    def seek(self, frame: int) -> None:
        self.page.fill("#frame-number", str(frame))
        self.page.press("#frame-number", "Enter")
        self.wait_frame(frame)

    def track(self, step: str) -> dict:
        """Press Track; wait for that job (not an earlier one) to end and return it."""
        before = self.page.evaluate("() => window.masklet.job && window.masklet.job.id")
        self.page.click("#track-btn")
        self.page.wait_for_function(
            "b => { const j = window.masklet.job; return j && j.id !== b && j.done > 0; }",
            arg=before)
        self.shot(step)  # the progress bar on its way (or already full, on a fast machine)
        self.page.wait_for_function(
            "b => { const j = window.masklet.job; "
            "return j && j.id !== b && j.state !== 'running'; }",
            arg=before, timeout=60_000)
        return self.page.evaluate("() => window.masklet.job")

    def check_no_errors(self) -> None:
        assert not self.errors, self.errors


def open_page(context, server: Server, name: str, path: str) -> Page:
    """A new tab on the app, with the folder or file `path` (under the roots) open in it."""
    tab = Page(context, server, name)
    tab.page.goto(server.url + "/")
    tab.wait_status("info")
    open_path(tab, path)
    return tab


def open_path(tab: Page, path: str) -> str:
    tab.page.fill("#path-input", path)
    tab.page.click("#path-open")
    return tab.wait_status("info")


def prompts_of(server: Server, video_id: int, frame: int) -> list[dict]:
    return server.json(f"/api/videos/{video_id}/prompts?frame={frame}")["prompts"]


def download(tab: Page, fmt: str, folder: Path) -> Path:
    with tab.page.expect_download() as info:
        tab.page.click(f'[data-export="{fmt}"]')
    download = info.value
    assert download.failure() is None, download.failure()
    target = folder / download.suggested_filename
    download.save_as(str(target))
    return target
