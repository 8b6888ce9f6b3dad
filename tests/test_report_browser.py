"""report.html in a real browser: headless Chromium opens the committed smoke report (418 trials) from disk,
logs no console error, renders it in under 2 s, sorts the leaderboard when a header is clicked, and draws a
screenshot that is not blank. Skipped where `chromium` is not installed (CI installs it: .ci/run).

Chromium is driven through its DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON messages
ending in a NUL byte, written to its fd 3 and read from its fd 4), so nothing listens on a port and no
package beyond the standard library is needed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "results" / "smoke-cpu"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


class Browser:
    """One headless Chromium and one page in it, driven over the DevTools pipe."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds():  # the browser reads commands on fd 3 and writes replies on fd 4 (dup2: inherited)
            reading, writing = os.dup(to_browser_r), os.dup(from_browser_w)  # neither 3 nor 4: both are taken
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-extensions", "--remote-debugging-pipe", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            preexec_fn=fds, close_fds=False,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=True)
        self.send("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def send(self, method: str, session: bool = False, **params) -> dict:
        """Send one command and wait for its reply (events that arrive meanwhile are kept in `events`)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict:
        """The first event `method` not yet waited for."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if event.get("method") == method:
                    self.events.remove(event)
                    return event
            self.events.append(self._read())
        raise TimeoutError(method)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def _read(self, timeout: float = 60.0) -> dict:
        while b"\0" not in self._buffer:
            if not select.select([self._from_browser], [], [], timeout)[0]:
                raise TimeoutError(f"chromium said nothing for {timeout:.0f} s")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise ConnectionError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen so far."""
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                found.append(params["entry"]["text"])
        return found

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (ConnectionError, OSError):
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture(scope="module")
def opened(tmp_path_factory):
    """The committed smoke report opened in Chromium from disk: (browser, seconds from navigation to the load
    event, the report's path). That it is what the tables give now is checked by test_report.py's slow test."""
    report = SMOKE / "report.html"
    assert report.is_file(), "run `membench report results/smoke-cpu`"
    browser = Browser(tmp_path_factory.mktemp("profile"))
    try:
        start = time.monotonic()
        browser.send("Page.navigate", session=True, url=report.as_uri())
        browser.wait_for("Page.loadEventFired")
        yield browser, time.monotonic() - start, report
    finally:
        browser.close()


def test_the_300_trial_report_is_small_and_renders_fast_without_errors(opened):
    browser, seconds, report = opened
    assert browser.evaluate("document.querySelectorAll('#board tbody tr').length") == 22
    assert report.stat().st_size < 5_000_000
    assert seconds < 2.0, f"loading took {seconds:.2f} s"
    # nothing was fetched from anywhere but the file itself
    assert browser.evaluate("performance.getEntriesByType('resource').length") == 0
    assert browser.errors() == []


def test_clicking_a_header_sorts_the_leaderboard(opened):
    browser, _, _ = opened
    rows = "Array.from(document.querySelectorAll('#board tbody tr'))"
    params_column = browser.evaluate(
        "Array.from(document.querySelectorAll('#board thead th')).findIndex(th => th.textContent === 'params')")
    read = f"{rows}.map(r => [r.cells[1].textContent, Number(r.cells[{params_column}].dataset.sort)])"
    before = browser.evaluate(read)
    box = browser.evaluate(f"(() => {{ const th = document.querySelectorAll('#board thead th')[{params_column}];"
                           "th.scrollIntoView({block: \"center\"}); const r = th.getBoundingClientRect();"
                           "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    for kind in ("mousePressed", "mouseReleased"):  # a real click at the header's place on the screen
        browser.send("Input.dispatchMouseEvent", session=True, type=kind, x=box[0], y=box[1], button="left",
                     clickCount=1)
    after = browser.evaluate(read)
    assert sorted(after) == sorted(before) and after != before
    assert [p for _, p in after] == sorted(p for _, p in before)  # ascending by params
    browser.send("Input.dispatchMouseEvent", session=True, type="mousePressed", x=box[0], y=box[1], button="left",
                 clickCount=1)
    browser.send("Input.dispatchMouseEvent", session=True, type="mouseReleased", x=box[0], y=box[1], button="left",
                 clickCount=1)
    assert [p for _, p in browser.evaluate(read)] == sorted((p for _, p in before), reverse=True)
    assert browser.errors() == []


def test_a_leaderboard_cell_opens_its_training_curves(opened):
    browser, _, _ = opened
    browser.evaluate("document.querySelector('#board tbody a[href^=\"#curves-\"]').click()")
    lines = browser.evaluate("document.querySelectorAll('#curve-panel polyline').length")
    assert not browser.evaluate("document.getElementById('curve-panel').hidden")
    assert lines >= 1
    assert browser.errors() == []


def test_the_screenshot_is_not_blank(opened):
    image = pytest.importorskip("PIL.Image")
    browser, _, _ = opened
    browser.evaluate("window.scrollTo(0, 0)")
    shot = browser.send("Page.captureScreenshot", session=True, format="png")
    picture = image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    assert picture.size[0] >= 1000
    assert len(picture.getcolors(1 << 24)) > 50  # text, tables and chart lines, not one flat colour
