"""Drive a headless Chromium from Python with the standard library only (for the web
export's tests).

Chromium speaks the DevTools protocol (CDP) over a pair of pipes when started with
``--remote-debugging-pipe``: it reads NUL-terminated JSON commands on fd 3 and writes
responses and events on fd 4.  That is all a page test needs (open a ``file://`` page,
set an ``<input type=file>``, evaluate JavaScript, read the console), without Playwright
(165 MB, a Node driver) or a websocket library, and without a debugging port that another
process on the machine could connect to.

>>> with Browser() as b:
...     b.open("file:///path/index.html")
...     b.evaluate("document.title")
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

#: Flags for a sandboxed CI machine with no network: no GPU, no sandbox (root in a
#: container), no background connections (refused here, and slow to fail).
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio",
    # The webcam path: a synthetic camera, permission granted without a prompt.
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]


class BrowserError(RuntimeError):
    """Chromium missing or failing, a CDP error, or a page exception."""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, ``$CHROMIUM`` first; None if there is none."""
    candidates = [os.environ.get("CHROMIUM"), "chromium", "chromium-browser",
                  "google-chrome", "google-chrome-stable"]
    for name in filter(None, candidates):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """One headless Chromium with one page, driven over the CDP pipe."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("Chromium not found (Debian: apt-get install chromium; "
                               "or set CHROMIUM=/path/to/chrome)")
        self.timeout = timeout
        self.console: list[str] = []      # console messages and page exceptions, in order
        self._next_id = 0
        self._buffer = b""
        self._events: list[dict] = []

    # ------------------------------------------------------------------ life cycle
    def __enter__(self) -> "Browser":
        self._profile = tempfile.mkdtemp(prefix="chromium-profile-")
        cmd_r, self._cmd_w = os.pipe()     # we write commands, Chromium reads fd 3
        self._out_r, out_w = os.pipe()     # Chromium writes fd 4, we read

        def child_fds():  # in the child, before exec: the pipe ends become fds 3 and 4
            a, b = os.dup(cmd_r), os.dup(out_w)  # above 4, so the dup2s cannot clobber them
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.closerange(5, os.sysconf("SC_OPEN_MAX"))  # nothing else leaks to Chromium

        self.process = subprocess.Popen(
            [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=child_fds, close_fds=False)  # child_fds closes the rest
        os.close(cmd_r)
        os.close(out_w)
        try:
            targets = self.send("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.send("Target.attachToTarget", targetId=page["targetId"],
                                     flatten=True)["sessionId"]
            for domain in ("Page", "Runtime"):
                self.send(f"{domain}.enable", session=self.session)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for fd in (self._cmd_w, self._out_r):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    # ------------------------------------------------------------------ protocol
    def send(self, method: str, session: str | None = None, timeout: float | None = None,
             **params) -> dict[str, Any]:
        """Send one CDP command and return its result (a CDP error raises BrowserError)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        reply = self._wait(lambda m: m.get("id") == self._next_id, timeout or self.timeout,
                           method)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The next event called ``method`` (already received or still to come)."""
        for i, event in enumerate(self._events):
            if event.get("method") == method:
                return self._events.pop(i)
        return self._wait(lambda m: m.get("method") == method, timeout or self.timeout,
                          method, keep=False)

    def _wait(self, matches, timeout: float, what: str, keep: bool = True) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                self._record(message)
                if matches(message):
                    return message
                if keep and "method" in message:
                    self._events.append(message)
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out after {timeout:g} s waiting for {what}; "
                                   f"console: {self.console[-5:]}")
            ready, _, _ = select.select([self._out_r], [], [], left)
            if ready:
                chunk = os.read(self._out_r, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium exited while waiting for {what}")
                self._buffer += chunk

    def _record(self, message: dict) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.console.append(f"exception: {text}")

    # ------------------------------------------------------------------ page helpers
    def open(self, url: str) -> None:
        """Navigate the page to ``url`` and wait for its load event."""
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        result = self.send("Page.navigate", session=self.session, url=url)
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """The value of a JavaScript expression (promises awaited); a thrown error raises."""
        result = self.send("Runtime.evaluate", session=self.session, timeout=timeout,
                           expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"page error: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None,
                 interval: float = 0.1) -> Any:
        """Poll until ``expression`` is truthy; return its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}; "
                                   f"console: {self.console[-5:]}")
            time.sleep(interval)

    def set_files(self, selector: str, paths: list[str | os.PathLike]) -> None:
        """Choose ``paths`` in the ``<input type=file>`` at ``selector`` (fires ``change``),
        as a user picking files would."""
        root = self.send("DOM.getDocument", session=self.session)["root"]["nodeId"]
        node = self.send("DOM.querySelector", session=self.session, nodeId=root,
                         selector=selector)["nodeId"]
        if not node:
            raise BrowserError(f"no element matches {selector!r}")
        self.send("DOM.setFileInputFiles", session=self.session, nodeId=node,
                  files=[str(Path(p).resolve()) for p in paths])

    def drop_files(self, selector: str, paths: list[str | os.PathLike]) -> None:
        """Drag ``paths`` from outside the page and drop them on the element at
        ``selector`` (real dragenter/dragover/drop events carrying the files)."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
                            " if (!e) return null; const r = e.getBoundingClientRect();"
                            " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        if box is None:
            raise BrowserError(f"no element matches {selector!r}")
        data = {"items": [], "files": [str(Path(p).resolve()) for p in paths],
                "dragOperationsMask": 1}
        for kind in ("dragEnter", "dragOver", "drop"):
            self.send("Input.dispatchDragEvent", session=self.session, type=kind, x=box[0],
                      y=box[1], data=data)
