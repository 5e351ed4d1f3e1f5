"""Open a local HTML page in headless Chromium and inspect it through the DevTools protocol.

Standard library only: Chromium is started with `--remote-debugging-pipe`, which speaks the
Chrome DevTools Protocol (CDP) as NUL-terminated JSON messages on file descriptors 3 (commands
in) and 4 (responses and events out), so no websocket client and no driver is needed. The
browser is Debian's `chromium` package (installed by the test set-up, never downloaded by a
test tool); `find_chromium()` returns None where it is missing, and tests skip with that reason.

    with HeadlessChromium() as browser:
        page = browser.open(Path("report.html"), width=1280)
        page.console_errors, page.images, page.evaluate("document.title")
        page.screenshot(Path("shot.png"))
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-quic", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--remote-debugging-pipe"]  # fmt: skip

# Every <img> and <video> of the page: source (shortened), whether it loaded, its intrinsic size.
MEDIA_JS = """Array.from(document.querySelectorAll('img, video')).map(e => ({
  tag: e.tagName.toLowerCase(), src: (e.currentSrc || e.src || '').slice(0, 80),
  complete: e.tagName === 'IMG' ? e.complete : e.readyState >= 1,
  width: e.tagName === 'IMG' ? e.naturalWidth : e.videoWidth,
  height: e.tagName === 'IMG' ? e.naturalHeight : e.videoHeight}))"""


def find_chromium() -> str | None:
    """Path of a Chromium binary (PHYSTEER_CHROMIUM, then chromium / chromium-browser), or None."""
    for name in (os.environ.get("PHYSTEER_CHROMIUM"), "chromium", "chromium-browser"):
        if name and (path := shutil.which(name)):
            return path
    return None


class CDPError(RuntimeError):
    """Chromium answered a command with an error, closed the pipe, or did not answer in time."""


class HeadlessChromium:
    """One headless Chromium process with a fresh profile, driven over the DevTools pipe."""

    def __init__(self, binary: str | None = None, timeout: float = 60.0) -> None:
        self.binary = binary or find_chromium()
        if self.binary is None:
            raise FileNotFoundError(
                "no chromium binary (apt-get install chromium, or set PHYSTEER_CHROMIUM)"
            )
        self.timeout = timeout
        self._id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []

    def __enter__(self) -> HeadlessChromium:
        self.profile = tempfile.mkdtemp(prefix="physteer-chromium-")
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes its answers
            src_in, src_out = os.dup(to_chrome_r), os.dup(from_chrome_w)  # safe if they are 3 or 4
            os.dup2(src_in, 3)
            os.dup2(src_out, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)
            os.closerange(5, 1024)  # nothing else of ours leaks into the browser

        self.proc = subprocess.Popen(
            [self.binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire, close_fds=False,  # close_fds would run after `wire` and close 3 and 4
        )  # fmt: skip
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.send("Browser.close")
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise CDPError(f"chromium did not answer within {self.timeout} s")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                err = (
                    self.proc.stderr.read().decode(errors="replace")[-2000:]
                    if self.proc.poll() is not None
                    else ""
                )
                raise CDPError(
                    f"chromium closed the DevTools pipe (exit {self.proc.poll()}): {err}"
                )
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile go to `events`."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, session: str | None = None) -> dict[str, Any]:
        """Wait for the next event `method` (of `session`), keeping the others in `events`."""
        deadline = time.monotonic() + self.timeout
        for i, ev in enumerate(self.events):
            if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                return self.events.pop(i)
        while True:
            ev = self._read_message(deadline)
            if ev.get("method") == method and (session is None or ev.get("sessionId") == session):
                return ev
            self.events.append(ev)

    def open(self, path: Path, width: int = 1280, height: int = 900) -> Page:
        """Load a local file in a new tab of the given viewport; returns the loaded Page."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.send(domain, session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session)
        self.wait_for("Page.loadEventFired", session)
        return Page(self, session, width, height)


class Page:
    """A loaded tab: evaluate JavaScript, read console errors and media, take screenshots."""

    def __init__(self, browser: HeadlessChromium, session: str, width: int, height: int) -> None:
        self.browser, self.session, self.width, self.height = browser, session, width, height

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (awaited if it is a promise)."""
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, self.session)  # fmt: skip
        if "exceptionDetails" in result:
            raise CDPError(f"JavaScript error in {expression[:60]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    @property
    def console_errors(self) -> list[str]:
        """console.error calls, uncaught exceptions and error log entries (failed loads) so far."""
        self.evaluate("1")  # flush events that arrived before now
        out = []
        for ev in self.browser.events:
            if ev.get("sessionId") != self.session:
                continue
            p = ev.get("params", {})
            if ev["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(
                    "console."
                    + p["type"]
                    + ": "
                    + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
                )
            elif ev["method"] == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p["exceptionDetails"])[:500])
            elif ev["method"] == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    @property
    def media(self) -> list[dict[str, Any]]:
        """Every <img> and <video>: tag, src (first 80 chars), complete, intrinsic width/height."""
        return self.evaluate(MEDIA_JS)

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Write a PNG of the page (the whole scroll height, up to 16000 px, if `full_page`)."""
        height = self.height
        if full_page:
            height = min(16000, int(self.evaluate("document.documentElement.scrollHeight")))
            self.browser.send("Emulation.setDeviceMetricsOverride",
                              {"width": self.width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                              self.session)  # fmt: skip
        data = self.browser.send("Page.captureScreenshot", {"format": "png"}, self.session)["data"]
        if full_page:  # back to the page's own viewport
            self.browser.send("Emulation.setDeviceMetricsOverride",
                              {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
                              self.session)  # fmt: skip
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
