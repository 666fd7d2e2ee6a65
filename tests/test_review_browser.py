"""`gunshot review serve` in headless Chromium: 20 items answered by keyboard across a server kill.

The server runs as its own process (as a user starts it); halfway through it is killed with SIGKILL
and started again, the page reloaded: it must resume at the first unanswered item with the earlier
answers shown, and verdicts.csv must end with every answer exactly once (plus the one changed on
purpose, superseding its first answer).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from gunshot_core import cli
from pipelines.review import sample, verdicts
from tests.browser import ARTIFACTS, CHROMIUM, LAUNCH_ARGS, chromium  # noqa: F401
from tests.review_runs import make_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(review_dir, port):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.review.cli",
            "serve",
            str(review_dir),
            "--port",
            str(port),
            "--reviewer",
            "tess",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
            return process
        except OSError:
            if process.poll() is not None:
                raise AssertionError(process.stdout.read().decode()) from None
            time.sleep(0.1)
    process.kill()
    raise AssertionError("review server did not start in 30 s")


def _state(page):
    return page.evaluate(
        """() => ({progress: document.getElementById('progress').textContent,
                   position: document.getElementById('position').textContent,
                   problem: document.getElementById('problem').hidden ? '' : document.getElementById('problem').textContent,
                   current: document.getElementById('current').textContent,
                   score: document.getElementById('score').hidden ? null : document.getElementById('score').textContent,
                   audio: document.getElementById('audio').getAttribute('src')})"""
    )


def _audio_duration(page) -> float:
    page.wait_for_function(
        "() => { const a = document.getElementById('audio'); return a.readyState >= 1 || a.error; }",
        timeout=10000,
    )
    return page.evaluate("() => document.getElementById('audio').duration")


def _answer(page, key, expected_count):
    page.keyboard.press(key)
    page.wait_for_function(
        f"() => document.getElementById('progress').textContent.startsWith('{expected_count} of')",
        timeout=10000,
    )


def test_review_by_keyboard_survives_a_killed_server(chromium, tmp_path):  # noqa: F811
    truth = make_run(tmp_path / "run", tmp_path / "audio", sites=("siteA",), recordings_per_site=2, seed=5)
    review = tmp_path / "review"
    assert (
        cli.main(
            ["review", "sample", "--scores", str(tmp_path / "run"), "--output", str(review), "--size", "21"]
        )
        == 0
    )
    items = sample.read_sample(str(review))
    is_gunshot = {(w["source"], round(w["start_seconds"], 3)): w["truth"] for w in truth["windows"]}
    gone = items[4]  # its clip disappears: the page says so and the reviewer skips it
    os.remove(review / gone["clip"])

    port = _free_port()
    browser = chromium._playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
    errors, external = [], []
    server = _start(review, port)
    try:
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on(
            "request",
            lambda r: None if r.url.startswith(f"http://127.0.0.1:{port}/") else external.append(r.url),
        )
        page.goto(f"http://127.0.0.1:{port}/")
        assert _state(page)["score"] is None  # hidden unless asked for
        page.keyboard.press("s")
        assert _state(page)["score"].startswith("score ")
        page.keyboard.press("s")

        expected = {}
        answered = 0

        def review_until(count):
            nonlocal answered
            while answered < count:
                state = _state(page)
                index = int(state["position"].split()[1]) - 1
                item = items[index]
                if item is gone:
                    assert "is missing" in state["problem"] and state["audio"] is None
                    page.keyboard.press("ArrowRight")
                    continue
                if item["item_id"] in expected:  # resumed at the skipped item: answered ones follow
                    assert state["current"] in ("yes", "no")
                    page.keyboard.press("ArrowRight")
                    continue
                assert state["problem"] == ""
                assert _audio_duration(page) == pytest.approx(
                    float(item["end_seconds"]) - float(item["start_seconds"]) + 1.0, abs=0.05
                )
                verdict = (
                    "yes" if is_gunshot[(item["source"], round(float(item["start_seconds"]), 3))] else "no"
                )
                if answered == 2:  # a label first: l, type, Enter, then the verdict key
                    page.keyboard.press("l")
                    page.keyboard.type("pistol")
                    page.keyboard.press("Enter")
                answered += 1
                _answer(page, verdict[0], answered)
                expected[item["item_id"]] = verdict

        review_until(10)
        # Change the answer before last: back twice, the opposite key, which moves forward again.
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowLeft")
        changed = items[int(_state(page)["position"].split()[1]) - 1]["item_id"]
        flipped = "no" if expected[changed] == "yes" else "yes"
        page.keyboard.press(flipped[0])
        page.wait_for_function("() => document.getElementById('current').textContent !== ''", timeout=5000)
        page.wait_for_function(
            f"() => document.getElementById('saved').textContent.includes('{changed}')", timeout=5000
        )
        expected[changed] = flipped

        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        server = _start(review, port)
        page.reload()
        state = _state(page)
        assert state["progress"] == "10 of 21 answered"
        # Resumes at the first item without an answer: the one skipped for its missing clip.
        assert items[int(state["position"].split()[1]) - 1] is gone
        review_until(20)
        assert _state(page)["progress"] == "20 of 21 answered"
        page.keyboard.press("ArrowLeft")
        shot = tmp_path / "review-page.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10000
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, ARTIFACTS / "review-serve.png")  # CI keeps test-artifacts/
    finally:
        server.kill()
        server.wait()
        browser.close()

    rows = verdicts.read_verdicts(str(review))
    assert len(rows) == 21  # 20 answers + the changed one, nothing lost, nothing twice
    latest = verdicts.latest(rows)
    assert {item: row["verdict"] for (item, _), row in latest.items()} == expected
    assert all(who == "tess" for _, who in latest)
    assert [r["label"] for r in rows].count("pistol") == 1
    assert gone["item_id"] not in expected
    assert errors == [] and external == []
