"""Opens generated HTML pages in headless Chromium (the system's Debian `chromium`) and reports what a
reader would see: console errors, images that did not load, audio players without a duration, table
text, and requests that left the machine. A screenshot of every page is kept in `test-artifacts/`
(git-ignored; CI keeps the folder).

Driven by Playwright's Python package with `executable_path` set to the system browser (its own
browser downloads are never used). `.ci/run` installs `chromium` when it is missing and it can; when
the browser truly cannot be had, it says so loudly and exports `GUNSHOT_BROWSER_UNAVAILABLE=<reason>`,
and only then are browser tests skipped, with that reason. A missing browser without that variable is
a test failure, never a silent skip.

    from tests.browser import chromium  # noqa: F401  (the session-wide browser fixture)

    def test_index(chromium, tmp_path):
        page = chromium.inspect(tmp_path / "report" / "index.html", screenshot="report-index")
        assert page.console_errors == [] and page.external_requests == []
        assert all(w > 0 for _, w in page.images)
        assert all(d > 0 for _, d in page.audio)
        assert page.tables["events"][0][1] == "rec.wav"
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
import re
import shutil
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = pathlib.Path(os.environ.get("GUNSHOT_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = os.environ.get("GUNSHOT_CHROMIUM", "/usr/bin/chromium")
UNAVAILABLE_ENV = "GUNSHOT_BROWSER_UNAVAILABLE"

#: Flags that let Chromium run headless as root in a container, with no network side traffic.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
]


@dataclasses.dataclass
class PageCheck:
    """What one page showed.

    Attributes:
      url: the file:// URL opened.
      title: document title.
      console_errors: console messages of type error, uncaught page errors and failed requests.
      external_requests: URLs requested that are not file: or data: (a static site makes none).
      images: [(src, naturalWidth)] for every <img>, after every image finished loading.
      audio: [(src, duration seconds)] for every <audio>, after its metadata loaded (NaN if it
        never did; see audio_errors).
      audio_errors: [(src, MediaError code)] for players that failed.
      tables: {table id (or "table-N" by position): [[cell text, ...] per body row]}.
      links: every <a href> on the page, as written.
      text: the page's visible text.
      screenshot: where the full-page screenshot was saved.
    """

    url: str
    title: str
    console_errors: list[str]
    external_requests: list[str]
    images: list[tuple[str, int]]
    audio: list[tuple[str, float]]
    audio_errors: list[tuple[str, int]]
    tables: dict[str, list[list[str]]]
    links: list[str]
    text: str
    screenshot: pathlib.Path


_COLLECT_JS = """async (timeoutMs) => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(img => img.complete ? null :
      new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
  const players = Array.from(document.querySelectorAll('audio'));
  const deadline = Date.now() + timeoutMs;
  for (const a of players) { if (a.readyState < 1 && !a.error) { a.load(); } }
  while (players.some(a => a.readyState < 1 && !a.error) && Date.now() < deadline) {
    await new Promise(r => setTimeout(r, 50));
  }
  const tables = {};
  Array.from(document.querySelectorAll('table')).forEach((t, i) => {
    const rows = Array.from(t.tBodies.length ? t.tBodies[0].rows : t.rows);
    tables[t.id || ('table-' + i)] = rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()));
  });
  return {
    title: document.title,
    images: imgs.map(i => [i.getAttribute('src'), i.naturalWidth]),
    audio: players.map(a => [a.getAttribute('src'), a.readyState >= 1 ? a.duration : null]),
    audio_errors: players.filter(a => a.error).map(a => [a.getAttribute('src'), a.error.code]),
    tables: tables,
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
    text: document.body ? document.body.innerText : '',
  };
}"""


def _safe_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z._-]+", "_", name).strip("_") or "page"


class Chromium:
    """One headless Chromium with a fresh profile; `inspect()` opens pages one at a time."""

    def __init__(self, executable: str = CHROMIUM):
        from playwright.sync_api import sync_playwright

        self._profile = tempfile.mkdtemp(prefix="gunshot-chromium-")
        self._playwright = sync_playwright().start()
        try:
            self._context = self._playwright.chromium.launch_persistent_context(
                self._profile,
                executable_path=executable,
                headless=True,
                args=LAUNCH_ARGS,
                viewport={"width": 1280, "height": 900},
                offline=True,
            )
        except Exception:
            self._playwright.stop()
            shutil.rmtree(self._profile, ignore_errors=True)
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._context.close()
        with contextlib.suppress(Exception):
            self._playwright.stop()
        shutil.rmtree(self._profile, ignore_errors=True)

    def inspect(
        self, path: str | os.PathLike, *, screenshot: str, timeout_seconds: float = 20.0
    ) -> PageCheck:
        """Opens a local page, waits for its images and audio metadata, and collects a PageCheck.

        Args:
          path: the HTML file.
          screenshot: artifact name (the PNG is ARTIFACTS/<name>.png).
        """
        url = pathlib.Path(path).resolve().as_uri()
        errors: list[str] = []
        external: list[str] = []
        page = self._context.new_page()
        page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))

        def on_failed(request):
            # Chromium reads a media file in ranges and aborts the first request once it has what it
            # needs (metadata); that is not a failure. A missing file fails as ERR_FILE_NOT_FOUND.
            if request.resource_type == "media" and request.failure == "net::ERR_ABORTED":
                return
            errors.append(f"requestfailed: {request.url} {request.failure}")

        page.on("requestfailed", on_failed)

        def on_request(request):
            if not request.url.startswith(("file:", "data:", "blob:", "about:")):
                external.append(request.url)

        page.on("request", on_request)
        try:
            page.goto(url, wait_until="load", timeout=timeout_seconds * 1000)
            found = page.evaluate(_COLLECT_JS, int(timeout_seconds * 1000))
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / f"{_safe_name(screenshot)}.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            page.close()
        return PageCheck(
            url=url,
            title=found["title"],
            console_errors=errors,
            external_requests=external,
            images=[(src, int(width)) for src, width in found["images"]],
            audio=[(src, math.nan if d is None else float(d)) for src, d in found["audio"]],
            audio_errors=[(src, int(code)) for src, code in found["audio_errors"]],
            tables=found["tables"],
            links=found["links"],
            text=found["text"],
            screenshot=shot,
        )


def browser_unavailable_reason() -> str | None:
    """Why browser tests cannot run here, or None when they can (or must, and then fail loudly)."""
    reason = os.environ.get(UNAVAILABLE_ENV)
    if reason:
        return reason
    return None


# One browser per process, shared by every module that imports the fixture (each import defines its
# own session fixture; Playwright's sync API allows only one running instance per thread).
_SHARED = {"browser": None, "users": 0}


@pytest.fixture(scope="session")
def chromium():
    """A session-wide headless Chromium (see the module docstring for when it skips)."""
    reason = browser_unavailable_reason()
    if reason:
        pytest.skip(f"BROWSER TESTS SKIPPED: {reason}")
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: install it (`apt-get install -y chromium`, as .ci/run does) or set"
            f" {UNAVAILABLE_ENV}=<reason> to skip browser tests deliberately"
        )
    if _SHARED["browser"] is None:
        _SHARED["browser"] = Chromium()
    _SHARED["users"] += 1
    try:
        yield _SHARED["browser"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            _SHARED["browser"].close()
            _SHARED["browser"] = None


def assert_page_ok(page: PageCheck) -> None:
    """The checks every generated page must pass: no console errors, no network, images and audio load."""
    assert page.console_errors == [], page.console_errors
    assert page.external_requests == [], page.external_requests
    broken = [src for src, width in page.images if width <= 0]
    assert not broken, f"images that did not load in {page.url}: {broken}"
    silent = [src for src, d in page.audio if not (d > 0)]
    assert not silent, f"audio without a duration in {page.url}: {silent} (errors: {page.audio_errors})"
