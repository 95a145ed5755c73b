"""The report in a real browser: headless Chromium (Debian's `chromium`; `.ci/run` installs it) opens the
page, which must load without console errors, fetch nothing but itself and its inline images, show every
image (a loaded <img> with non-zero natural size), filter on click, and render a sensible screenshot.

Chromium is driven over the DevTools protocol through a pipe (``--remote-debugging-pipe``: JSON messages
separated by NUL bytes on fds 3 and 4), so the test needs no websocket client or browser package.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import run_cli
from tests.publish_fixtures import sets  # noqa: F401 - the session fixture

CHROMIUM = os.environ.get("SYNTH_CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
    "--remote-debugging-pipe",
)


class BrowserError(RuntimeError):
    pass


class Chromium:
    def __init__(self, executable: str = CHROMIUM, timeout: float = 30.0):
        if not Path(executable).is_file():
            raise BrowserError(f"{executable} not found: install Debian's chromium (bash .ci/install-browser.sh)")
        self.executable = executable
        self.timeout = timeout
        self._id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> Chromium:
        self.profile = tempfile.mkdtemp(prefix="synth-chromium-")
        self.log = tempfile.TemporaryFile()  # a file, not a pipe: Chromium's chatter must never block it
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes replies on fd 4; bash moves the child's ends there
        # (dash takes only one-digit fds). They go to high numbers first, so neither sits on 3 or 4.
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        args = [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        self.process = subprocess.Popen(
            ["/bin/bash", "-c", f'exec "$@" 3<&{child_r} 4>&{child_w}', "bash", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log,
            pass_fds=(child_r, child_w),
        )
        os.close(child_r)
        os.close(child_w)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close")
        except BrowserError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        self.log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    # -- protocol -------------------------------------------------------------------------------------

    def _read_message(self, deadline: float) -> dict[str, Any]:
        import select

        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for Chromium")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                self.log.seek(0)
                err = self.log.read().decode(errors="replace")[-2000:]
                raise BrowserError(f"Chromium closed the pipe (exit {self.process.poll()}): {err}")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            os.write(self._to_browser, data)
        except OSError as e:
            raise BrowserError(f"cannot talk to Chromium: {e}") from None
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str, timeout: float | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + (timeout or self.timeout)
        for i, event in enumerate(self.events):
            if event.get("method") == method and event.get("sessionId") == session:
                return self.events.pop(i)
        while True:
            event = self._read_message(deadline)
            if event.get("method") == method and event.get("sessionId") == session:
                return event
            self.events.append(event)

    def open(self, url: str, width: int = 1400, height: int = 900) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        self.send("Page.navigate", {"url": url}, session)
        self.wait_for("Page.loadEventFired", session)
        return Page(self, session)


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str) -> Any:
        result = self.browser.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, self.session
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: str | os.PathLike, full_page: bool = False, clip: dict | None = None) -> Path:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if clip:
            params["clip"] = {**clip, "scale": 1}
        data = self.browser.send("Page.captureScreenshot", params, self.session)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def _events(self, method: str) -> list[dict[str, Any]]:
        self.evaluate("1")  # flush: events that arrived before this reply are now in the list
        return [e for e in self.browser.events if e.get("method") == method and e.get("sessionId") == self.session]

    @property
    def console_errors(self) -> list[str]:
        """Uncaught exceptions, console.error/console.warn calls and the browser's own error log lines."""
        out = []
        for e in self._events("Runtime.exceptionThrown"):
            details = e["params"]["exceptionDetails"]
            out.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
        for e in self._events("Runtime.consoleAPICalled"):
            if e["params"]["type"] in ("error", "warning", "assert"):
                out.append(f"console.{e['params']['type']}: " + " ".join(str(a.get("value", a.get("description"))) for a in e["params"]["args"]))
        for e in self._events("Log.entryAdded"):
            entry = e["params"]["entry"]
            if entry.get("level") in ("error", "warning"):
                out.append(f"log {entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".strip())
        return out

    @property
    def requests(self) -> list[str]:
        """Every URL the page asked for (the page itself included)."""
        return [e["params"]["request"]["url"] for e in self._events("Network.requestWillBeSent")]


# ---------------------------------------------------------------- the test


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        # Not a skip: CI installs the browser (.ci/run calls .ci/install-browser.sh), so missing is an error.
        pytest.fail(f"{CHROMIUM} is missing: run `bash .ci/install-browser.sh` (as root) to install Debian's chromium")
    with Chromium() as chromium:
        yield chromium


VISIBLE = "Array.from(document.querySelectorAll('.item')).filter(e => !e.hidden)"


def test_report_in_headless_chromium(browser, sets, tmp_path):  # noqa: F811
    from PIL import Image

    out = tmp_path / "report.html"
    result = run_cli("report", sets["mix"], sets["evolved"], sets["prefs"], "--out", out, "--sample", 12)
    assert result.exit_code == 0, result.output
    html = out.read_text()
    page = browser.open(out.as_uri(), width=1280, height=900)

    assert page.console_errors == []
    assert set(page.requests) <= {out.as_uri()} | {u for u in page.requests if u.startswith("data:image/")}
    images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == html.count("<img ") > 30
    assert all(complete and w > 0 and h > 0 for complete, w, h in images), images

    counts = page.evaluate("Object.fromEntries(['samples','chains','pairs','rejects'].map(id => "
                           "[id, document.querySelector(`[data-count-for=${id}]`).textContent]))")
    total = page.evaluate(f"{VISIBLE}.length")
    assert counts["pairs"] == "(8)" and total == page.evaluate("document.querySelectorAll('.item').length")

    # Filter by reason: only what carries it stays (chains with an eliminated step, the rejects group).
    page.evaluate("(() => { const s = document.getElementById('filter-reason'); s.value = 'judge_not_improved';"
                  " s.dispatchEvent(new Event('change')); })()")
    shown = page.evaluate(f"{VISIBLE}.map(e => [e.className, e.getAttribute('data-reason')])")
    assert shown and all("judge_not_improved" in (reason or "").split("\t") for _, reason in shown)
    assert {c.split()[0] for c, _ in shown} == {"chain", "reject"}
    assert "of" in page.evaluate("document.querySelector('[data-count-for=samples]').textContent")

    # Clear, then click a reason chip in the chart: it sets the reason filter.
    page.evaluate("document.getElementById('filter-clear').click()")
    assert page.evaluate(f"{VISIBLE}.length") == total
    page.evaluate("document.querySelector('#pipeline .chip[data-set-reason=identical]').click()")
    assert page.evaluate("document.getElementById('filter-reason').value") == "identical"
    assert page.evaluate(f"{VISIBLE}.map(e => e.getAttribute('data-dataset'))") == ["prefs"]

    # Filter by source and search text together.
    page.evaluate("document.getElementById('filter-clear').click()")
    page.evaluate("(() => { const s = document.getElementById('filter-source'); s.value = 'captions';"
                  " s.dispatchEvent(new Event('change')); })()")
    sources = page.evaluate(f"{VISIBLE}.map(e => e.getAttribute('data-source'))")
    assert sources and set(sources) == {"captions"}
    assert page.console_errors == []

    page.evaluate("document.getElementById('filter-clear').click(); window.scrollTo(0, 0)")
    shot = page.screenshot(tmp_path / "report.png")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 900)
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200  # text, bars and thumbnails, not a blank page
    green = sum(n for n, (r, g, b) in colours if (r, g, b) == (0x59, 0xA1, 0x4F))
    assert green > 500  # the chart's kept bars are in the first screen
