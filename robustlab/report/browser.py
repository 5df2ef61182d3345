"""Open an HTML file in headless Chromium and report what a reader would see: console errors,
uncaught exceptions, failed loads, the state of every image, and a PNG screenshot.

Drives Chromium through its DevTools protocol over ``--remote-debugging-pipe`` (file
descriptors 3 and 4, NUL-separated JSON), so it needs no Python package, no port and no
network. Used by the report's browser test; ``find_chromium()`` locates the executable
(Debian's ``chromium`` package; ``scripts/browser-setup.sh`` installs it).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustlab.errors import RobustlabError

__all__ = ["find_chromium", "PageCheck", "check_page", "CHROMIUM_FLAGS"]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]

_IMAGES_JS = (
    "JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
    " naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight})))"
)


def find_chromium() -> str | None:
    """Path of a Chromium executable (``$CHROMIUM``, then chromium on ``PATH``) or None."""
    env = os.environ.get("CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What loading a page produced."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    images: list[dict[str, Any]] = field(default_factory=list)
    title: str = ""
    screenshot: bytes = b""


class _Pipe:
    """A DevTools-protocol session with one Chromium process over its debugging pipe."""

    def __init__(self, exe: str, timeout: float, log: Path, profile: Path) -> None:
        self.timeout = timeout
        child_r, self._w = os.pipe()
        self._r, child_w = os.pipe()

        def wire() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes answers
            a, b = os.dup(child_r), os.dup(child_w)  # inheritable copies above 4
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = open(log, "wb")  # noqa: SIM115 (closed in close())
        args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"]
        self.proc = subprocess.Popen(
            [*args, "about:blank"], preexec_fn=wire, close_fds=False,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )  # fmt: skip
        os.close(child_r)
        os.close(child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RobustlabError("chromium did not answer in time")
            ready, _, _ = select.select([self._r], [], [], left)
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise RobustlabError("chromium closed its debugging pipe (did it start?)")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        self._id += 1
        cmd: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            cmd["sessionId"] = session
        os.write(self._w, json.dumps(cmd).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read(deadline)
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RobustlabError(f"chromium: {method} failed: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, method: str) -> dict[str, Any]:
        for e in self.events:
            if e.get("method") == method:
                return e
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._read(deadline)
            self.events.append(msg)
            if msg.get("method") == method:
                return msg

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RobustlabError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self._w)
        os.close(self._r)
        self._log.close()


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                              for a in p.get("args", [])))  # fmt: skip
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(
                "exception: " + str(d.get("exception", {}).get("description") or d.get("text"))
            )
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.loadingFailed":
            out.append(f"load failed: {p.get('errorText')}")
    return out


def check_page(
    path: str | Path,
    chromium: str | None = None,
    width: int = 1280,
    height: int = 900,
    timeout: float = 60.0,
) -> PageCheck:
    """Load ``path`` (a local HTML file) in headless Chromium with a fresh profile.

    Returns the console/log errors, every image's ``complete``/``naturalWidth``, the title and
    a full-page PNG screenshot. Raises :class:`RobustlabError` if Chromium is missing or hangs.
    """
    exe = chromium or find_chromium()
    if exe is None:
        raise RobustlabError("chromium not found (install Debian's chromium package)")
    url = Path(path).resolve().as_uri()
    tmp = Path(tempfile.mkdtemp(prefix="robustlab-chromium-"))
    browser = _Pipe(exe, timeout, tmp / "chromium.log", tmp / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        session = s["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            browser.send(method, session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                     session=session)  # fmt: skip
        nav = browser.send("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            raise RobustlabError(f"chromium could not open {url}: {nav['errorText']}")
        browser.wait_for("Page.loadEventFired")
        ev = browser.send("Runtime.evaluate", {"expression": _IMAGES_JS, "returnByValue": True},
                          session=session)  # fmt: skip
        images = json.loads(ev["result"]["value"])
        title = browser.send("Runtime.evaluate",
                             {"expression": "document.title", "returnByValue": True},
                             session=session)["result"]["value"]  # fmt: skip
        shot = browser.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True},
            session=session,
        )
        return PageCheck(_errors(browser.events), images, title, base64.b64decode(shot["data"]))
    finally:
        browser.close()
        shutil.rmtree(tmp, ignore_errors=True)
