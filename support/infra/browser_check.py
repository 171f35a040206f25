"""Open every page of the built book in headless Chromium, offline, and report what a reader would see broken.

``make check-html`` (or ``python -m support.infra.browser_check _build/smoke/_build/html``) starts
Debian's ``chromium`` (no browser is downloaded) with every host name unresolvable, so a page that
needed the network shows it, and drives it over the DevTools protocol (through ``tornado``'s websocket
client, already installed with Jupyter). For each page it waits until MathJax has typeset, then fails
the page for

* **unrendered TeX**: a math element MathJax did not typeset, or TeX delimiters left in the text;
* **a broken image**: an ``<img>`` that did not load;
* **an empty table**: a ``<table>`` without a single data cell;
* **a JavaScript error**: an uncaught exception, a ``console.error``, or a resource that failed to load,

and saves a screenshot of the page's first screen to ``screenshots/`` next to the HTML folder.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHECKS_JS = r"""
(() => {
  const skip = "pre, code, script, style, mjx-container, .highlight, textarea";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const raw = [];
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (!node.parentElement || node.parentElement.closest(skip)) continue;
    const text = node.textContent;
    if (/\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\\frac|\\mathbf/.test(text)) raw.push(text.trim().slice(0, 80));
  }
  const math = [...document.querySelectorAll("span.math, div.math")];
  const untypeset = math.filter(e => !e.querySelector("mjx-container")).map(e => e.textContent.trim().slice(0, 60));
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute("src"));
  const emptyTables = [...document.querySelectorAll("table")].filter(t => t.querySelectorAll("td").length === 0).length;
  return {raw, untypeset, math: math.length, broken, emptyTables, images: document.images.length,
          title: document.title};
})()
"""


@dataclass
class PageReport:
    """What the browser found on one page."""

    page: str
    math: int = 0
    images: int = 0
    untypeset: list[str] = field(default_factory=list)
    raw_tex: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    empty_tables: int = 0
    errors: list[str] = field(default_factory=list)
    screenshot: str = ""

    @property
    def problems(self) -> list[str]:
        found = [f"{len(self.untypeset)} math element(s) not typeset, e.g. {self.untypeset[0]!r}"] if self.untypeset else []
        found += [f"TeX left in the text: {self.raw_tex[0]!r}"] if self.raw_tex else []
        found += [f"broken image {src}" for src in self.broken_images]
        found += [f"{self.empty_tables} empty table(s)"] if self.empty_tables else []
        found += [f"JavaScript: {error}" for error in self.errors]
        return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _DevTools:
    """A minimal DevTools-protocol client: numbered commands, and the events that arrive in between."""

    def __init__(self, connection: Any) -> None:
        self.connection, self.next_id, self.events = connection, 0, []

    async def _receive(self, deadline: float, waiting_for: str) -> dict[str, Any]:
        """The next message from Chromium, or TimeoutError once ``deadline`` (monotonic time) has passed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"Chromium sent no {waiting_for} in time")
        message = await asyncio.wait_for(self.connection.read_message(), remaining)
        if message is None:
            raise ConnectionError("Chromium closed the DevTools connection")
        return json.loads(message)

    async def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send ``method`` and return its result; events that arrive meanwhile are kept in ``events``."""
        self.next_id += 1
        ident = self.next_id
        await self.connection.write_message(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while (data := await self._receive(deadline, f"answer to {method} within {timeout} s")).get("id") != ident:
            self.events.append(data)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def wait_for_event(self, method: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method for e in self.events):
            self.events.append(await self._receive(deadline, f"{method} within {timeout} s"))

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                found.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                found.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                found.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())
        return found


async def _check_pages(ws_url: str, html: Path, pages: list[Path], shots: Path, settle: float) -> list[PageReport]:
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(ws_url, max_message_size=256 * 1024 * 1024)
    tools = _DevTools(connection)
    for domain in ("Page", "Runtime", "Log"):
        await tools.call(f"{domain}.enable")
    await tools.call("Emulation.setDeviceMetricsOverride", width=1280, height=1400, deviceScaleFactor=1, mobile=False)
    reports = []
    for page in pages:
        name = page.relative_to(html).as_posix()
        tools.events = []
        await tools.call("Page.navigate", url=page.resolve().as_uri())
        await tools.wait_for_event("Page.loadEventFired", 120)
        # MathJax typesets after load; startup.promise resolves once it has (pages without math have no MathJax)
        await tools.call("Runtime.evaluate", awaitPromise=True, returnByValue=True, timeout=120,
                         expression="window.MathJax && MathJax.startup && MathJax.startup.promise ? "
                                    "MathJax.startup.promise.then(() => true) : true")
        await asyncio.sleep(settle)  # late image loads and errors
        found = (await tools.call("Runtime.evaluate", expression=CHECKS_JS, returnByValue=True))["result"]["value"]
        shot = await tools.call("Page.captureScreenshot", format="png")
        target = shots / (name.replace("/", "__").removesuffix(".html") + ".png")
        target.write_bytes(base64.b64decode(shot["data"]))
        reports.append(PageReport(name, found["math"], found["images"], found["untypeset"], found["raw"], found["broken"],
                                  found["emptyTables"], tools.errors(), str(target)))
    connection.close()
    return reports


def check_site(html: str | Path, browser: str = "chromium", settle: float = 0.5) -> list[PageReport]:
    """Check every page of the built HTML folder ``html`` offline in headless ``browser``; screenshots go
    to ``<html>/../screenshots``."""
    html = Path(html)
    executable = shutil.which(browser)
    if executable is None:
        raise FileNotFoundError(f"no '{browser}' on PATH: install Debian's package (apt-get install chromium); "
                                "this check never downloads a browser")
    pages = sorted(p for p in html.glob("*.html") if p.name not in ("genindex.html", "search.html"))
    pages += sorted(html.glob("book/*.html"))
    if not pages:
        raise FileNotFoundError(f"no pages under {html}: build the book first (make book)")
    shots = html.parent / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile_dir:  # Chromium may still be writing
        process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--remote-debugging-port={port}", f"--user-data-dir={profile_dir}",
             "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host name resolves
             "--allow-file-access-from-files", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ws_url = _page_socket(port)
            return asyncio.run(_check_pages(ws_url, html, pages, shots, settle))
        finally:
            process.terminate()
            process.wait(timeout=30)


def _page_socket(port: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as answer:
                targets = json.load(answer)
            for target in targets:
                if target.get("type") == "page":
                    return target["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"Chromium's DevTools did not come up on port {port} within {timeout} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", type=Path, help="the built HTML folder, e.g. _build/smoke/_build/html")
    parser.add_argument("--browser", default="chromium")
    args = parser.parse_args(argv)
    reports = check_site(args.html, args.browser)
    failed = 0
    for report in reports:
        status = "FAILED" if report.problems else "ok"
        failed += bool(report.problems)
        print(f"{status:6} {report.page}: {report.math} math elements, {report.images} images")
        for problem in report.problems:
            print(f"         {problem}")
    print(f"{len(reports)} pages, {failed} with problems; screenshots in {args.html.parent / 'screenshots'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
