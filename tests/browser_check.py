"""Open every page of the built book in headless Chromium, as a reader would, and fail on what a reader would see.

    python tests/browser_check.py [_build/html] [--width 1400] [--screenshot PAGE OUT.png]

The site is served on the loopback address; Chromium is driven over the DevTools protocol (websocket-client).
A page fails on: a MathJax error or math left untypeset, a display equation wider than its column, a code cell
or its output wider than its box (a reader would scroll sideways), an image
that does not load or is drawn below 70% of its natural width, a request to any host but the local server, a
console error or an uncaught exception. Exit status 0 when every page passes, 1 otherwise, 2 when no Chromium
is installed (the message says how to install one).
"""
from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Run in the page once MathJax has finished: everything the check measures, as one JSON object.
PROBE = r"""
(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  await new Promise(r => setTimeout(r, 300));
  const out = {mathjax: !!window.MathJax, errors: [], untypeset: [], wide: [], images: [], scrolls: []};
  document.querySelectorAll('mjx-merror, .MathJax_Error').forEach(e => out.errors.push(e.textContent.slice(0, 80)));
  const walker = document.createTreeWalker(document.querySelector('main') || document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const p = n.parentElement;
    if (p && p.closest('pre, code, script, style, mjx-container, .highlight, textarea')) continue;
    if (/\\\(|\\\[|\$\$/.test(n.textContent)) out.untypeset.push(n.textContent.trim().slice(0, 80));
  }
  document.querySelectorAll('mjx-container[display="true"]').forEach(m => {
    const box = m.parentElement.closest('div.math, .math-wrapper, p, li, dd, section, article') || m.parentElement;
    const limit = box.clientWidth;
    const w = m.firstElementChild ? m.firstElementChild.getBoundingClientRect().width : m.scrollWidth;
    if (w > limit + 1) out.wide.push({width: Math.round(w), column: limit, tex: (m.getAttribute('aria-label') || m.textContent).slice(0, 60)});
  });
  document.querySelectorAll('div.cell pre').forEach(pre => {
    if (pre.getClientRects().length === 0) return;        // inside a closed dropdown
    if (pre.scrollWidth > pre.clientWidth + 1) {
      const long = pre.textContent.split('\n').reduce((a, b) => (b.length > a.length ? b : a), '');
      out.scrolls.push({width: pre.scrollWidth, box: pre.clientWidth, line: long.trim().slice(0, 60)});
    }
  });
  document.querySelectorAll('article img').forEach(img => {
    if (img.getClientRects().length === 0) return;        // not rendered (a closed menu)
    const shown = img.getBoundingClientRect().width;
    out.images.push({src: img.getAttribute('src'), complete: img.complete, natural: img.naturalWidth, shown: Math.round(shown)});
  });
  return JSON.stringify(out);
})()
"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A minimal DevTools-protocol client for one page target."""

    def __init__(self, ws_url: str):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 60.0):
        end = time.time() + timeout
        while time.time() < end:
            for i, e in enumerate(self.events):
                if e.get("method") == event:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(event)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the check prints its own report
        pass


def _serve(root: Path) -> tuple[socketserver.TCPServer, int]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def _start_browser(binary: str, width: int) -> tuple[subprocess.Popen, str, str]:
    profile = tempfile.mkdtemp(prefix="hjb-chromium-")
    proc = subprocess.Popen([binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--disable-background-networking", "--disable-sync",
                             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
                             f"--window-size={width},1000", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.time() + 60
    while time.time() < end:
        line = proc.stderr.readline()
        if "DevTools listening on" in line:
            browser_ws = line.split("listening on", 1)[1].strip()
            return proc, browser_ws, profile
    proc.kill()
    raise RuntimeError("Chromium did not start (no DevTools address within 60 s)")


def _page_ws(browser_ws: str) -> str:
    import urllib.request

    host = urlparse(browser_ws).netloc
    targets = json.loads(urllib.request.urlopen(f"http://{host}/json/list", timeout=10).read())
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


def check_page(dt: DevTools, url: str, width: int, local: str) -> list[str]:
    """Navigate to ``url`` and return the problems a reader would see (empty: the page passes)."""
    dt.events.clear()
    dt.call("Emulation.setDeviceMetricsOverride", width=width, height=1000, deviceScaleFactor=1, mobile=width < 600)
    dt.call("Page.navigate", url=url)
    dt.wait_for("Page.loadEventFired")
    res = dt.call("Runtime.evaluate", expression=PROBE, awaitPromise=True, returnByValue=True)
    info = json.loads(res["result"]["value"])
    problems = []
    for e in dt.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Network.requestWillBeSent":
            host = urlparse(p["request"]["url"]).netloc
            if p["request"]["url"].startswith(("http:", "https:")) and host != local:
                problems.append(f"external request: {p['request']['url'][:100]}")
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            what = d.get("exception", {}).get("description") or d.get("text", "")
            problems.append(f"exception: {what.splitlines()[0][:120]} ({d.get('url', '')[-60:]}:{d.get('lineNumber')})")
        elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
            problems.append(f"console error: {' '.join(str(a.get('value', '')) for a in p.get('args', []))[:100]}")
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            problems.append(f"console error: {p['entry'].get('text', '')[:100]} {p['entry'].get('url', '')[:60]}")
    problems += [f"MathJax error: {t}" for t in info["errors"]]
    problems += [f"untypeset math: {t}" for t in info["untypeset"]]
    problems += [f"equation {w['width']} px wide in a {w['column']} px column: {w['tex']}" for w in info["wide"]]
    problems += [f"code or output {s['width']} px wide in a {s['box']} px box (scrolls sideways): {s['line']}"
                 for s in info["scrolls"]]
    for img in info["images"]:
        if not img["complete"] or img["natural"] == 0:
            problems.append(f"image not loaded: {img['src']}")
        elif img["shown"] < 0.7 * img["natural"]:
            problems.append(f"image {img['src']} drawn at {img['shown']} px, {100 * img['shown'] / img['natural']:.0f}% "
                            f"of its {img['natural']} px")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", nargs="?", default="_build/html")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--screenshot", nargs=2, metavar=("PAGE", "OUT"), help="also save a PNG of one page")
    args = ap.parse_args(argv)
    root = Path(args.site)
    pages = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                   if not p.relative_to(root).as_posix().startswith(("_static/", "_sources/", "_images/"))
                   and 'http-equiv="refresh"' not in p.read_text(errors="ignore")[:2000].lower())  # redirects
    if not pages:
        print(f"browser check: no pages under {root}: build the book first (make book)", file=sys.stderr)
        return 1
    binary = find_browser()
    if binary is None:
        print("browser check: NO CHROMIUM FOUND, the book's pages were NOT checked. Install one with "
              "`apt-get install -y chromium` (Debian) and run `make test` again.", file=sys.stderr)
        return 2
    server, port = _serve(root)
    proc, browser_ws, profile = _start_browser(binary, args.width)
    failed = 0
    try:
        dt = DevTools(_page_ws(browser_ws))
        for domain in ("Page", "Network", "Runtime", "Log"):
            dt.call(f"{domain}.enable")
        local = f"127.0.0.1:{port}"
        for page in pages:
            problems = check_page(dt, f"http://{local}/{page}", args.width, local)
            if problems:
                failed += 1
                print(f"FAIL {page}")
                for p in problems:
                    print(f"    {p}")
        if args.screenshot:
            page, out = args.screenshot
            check_page(dt, f"http://{local}/{page}", args.width, local)
            h = dt.call("Runtime.evaluate", expression="document.documentElement.scrollHeight",
                        returnByValue=True)["result"]["value"]
            dt.call("Emulation.setDeviceMetricsOverride", width=args.width, height=min(int(h), 4000),
                    deviceScaleFactor=1, mobile=args.width < 600)
            png = dt.call("Page.captureScreenshot", format="png")["data"]
            Path(out).write_bytes(base64.b64decode(png))
    finally:
        proc.kill()
        server.shutdown()
        shutil.rmtree(profile, ignore_errors=True)
    print(f"browser check ({args.width} px): {len(pages) - failed} of {len(pages)} pages passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
