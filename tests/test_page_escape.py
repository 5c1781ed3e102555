"""The topology page shows what a replica answers as text, never as markup (tester bb40, F13).

The page's details of a switch carry its client's `/v1/state` relayed from whatever answers on the client's
REST port; page.js put `programmed_version`, `term`, `lsd_version` and `ports[].port` into innerHTML
unescaped, and a squatter's `<img src=x onerror=...>` ran script in the operator's browser (which keeps
the admin token in sessionStorage). The relay now refuses such a state (tests/test_page_clientfetch.py),
but the page must not depend on that: here a fake replica (stdlib HTTP on 127.0.0.1) answers markup in
every field the page shows — the fabric and group names of `/v1/view`, the header of the event stream, the
details of a switch, of its client and of a link — and a real headless Chromium must create no element and
run no handler from them, and show them literally.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.harness.browser import browser_missing, chromium, wait_js
from tests.harness.loopcluster import free_ports

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

ASSETS = Path(__file__).resolve().parent.parent / "controller" / "page_assets"
IMG = '<img src=x onerror="window.pwned=(window.pwned||[]).concat(1)">'
SVG = '<svg onload="window.pwned=(window.pwned||[]).concat(2)"></svg>'
QUOTE = '"><i id="inj">x</i><b class="'          # breaks out of an attribute value
TICK = "'><i id=\"inj2\">y</i>"
X = IMG + SVG + QUOTE + TICK
DIGEST = "d" * 64

VIEW = {
    "fabric": X, "digest": DIGEST, "masters": [], "roles": ["tor", "agg", "spine", "border"],
    "switches": {"name": ["spine-1", "leaf-1"], "role": [2, 0], "group": [0, 1]},
    "groups": [{"name": X, "kind": X}, {"name": "pod-1", "kind": X}],
    "links": {"a": [1], "ap": [1], "b": [0], "bp": [1], "w": [1]},
}
HEADER = {"master": X, "role": "master", "term": X, "leader": None, "version": X, "held": False}
CLIENT_STATE = {"switch": "leaf-1", "term": X, "lsd_version": X, "programmed_version": X, "master": X,
                "fail_static": X, "connected": X, "ports": [{"port": X, "peer": X, "phy": X, "nd": X,
                                                             "usable": X, "miscabled_by": X}], X: X}


def _switch(name: str, client: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "id": X, "role": X, "loopback": X, "prefixes": [X, X], "liveness": X,
            "changed_at": None, "changed_before": None, "seen_since": 0, "reported_at": None, "ports": None,
            "links": [{"index": X, "name": X, "port": X, "peer": X, "weight": X, "state": X}], "rest_port": 1,
            "client": client}


ANSWERS: dict[str, Any] = {
    "/v1/view": VIEW,
    "/v1/lsd/version": {"role": "master", "version": 1},
    "/v1/switch/leaf-1": _switch("leaf-1", {"url": X, "state": CLIENT_STATE}),
    "/v1/switch/spine-1": _switch("spine-1", {"url": X, "error": X}),
    "/v1/link/0": {"index": X, "name": X, "a": {"switch": X, "port": X, "liveness": X,
                                                "report": {"phy": X, "nd": X, "usable": X, "miscabled_by": X}},
                   "b": {"switch": "spine-1", "port": X, "liveness": X, "report": None},
                   "weight": X, "lsd_state": X, "state": X, "changed_at": None, "changed_before": None,
                   "seen_since": 0},
}


class _FakeReplica(ThreadingHTTPServer):
    daemon_threads = True
    stop_event: threading.Event


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FakeReplica

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, body: bytes, ctype: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        path = self.path.split("?")[0]
        if path == "/":
            self._send((ASSETS / "index.html").read_bytes(), "text/html; charset=utf-8")
        elif path.startswith("/page/") and (ASSETS / path[6:]).name in ("page.js", "page.css"):
            self._send((ASSETS / path[6:]).read_bytes(),
                       "text/javascript" if path.endswith(".js") else "text/css")
        elif path == "/v1/events":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            hello = {"header": HEADER, "digest": DIGEST, "t": 0, "since": 0, "links": "1", "alive": "12"}
            try:
                self.wfile.write(f"retry: 1000\nevent: hello\ndata: {json.dumps(hello)}\n\n".encode())
                self.wfile.flush()
                while not self.server.stop_event.wait(0.5):       # pings: the page keeps this replica
                    self.wfile.write(f"event: ping\ndata: {json.dumps({'header': HEADER, 't': 0})}\n\n".encode())
                    self.wfile.flush()
            except OSError:
                return
        elif path in ANSWERS:
            self._send(json.dumps(ANSWERS[path]).encode(), "application/json")
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def replica() -> Iterator[int]:
    port = free_ports(1)[0]
    server = _FakeReplica(("127.0.0.1", port), _Handler)
    server.stop_event = threading.Event()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield port
    server.stop_event.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = browser_missing()
    if missing:
        pytest.fail(missing)
    with chromium(tmp_path_factory.mktemp("chromium")) as d:
        yield d


INJECTED = """
  const bad = [...document.querySelectorAll('body img, body i, #details svg, #groups svg, body iframe, body object')]
    .map((e) => e.outerHTML.slice(0, 80));
  for (const e of document.querySelectorAll('body *'))
    for (const a of e.attributes) if (a.name.startsWith('on')) bad.push(`${e.tagName} ${a.name}`);
  if (window.pwned) bad.push(`handlers ran: ${window.pwned}`);
  return bad;"""


def _details(driver: Any, kind: str, i: int, ready: str) -> str:
    driver.execute_script("select(arguments[0], arguments[1])", kind, i)
    text = wait_js(driver, f"const e = document.querySelector({ready!r}); return e && e.textContent", 10)
    assert text, driver.execute_script("return document.getElementById('details').innerHTML")
    return str(driver.execute_script("return document.getElementById('details').textContent"))


def test_markup_from_a_replica_or_a_relayed_client_state_is_shown_as_text(driver: Any, replica: int) -> None:
    driver.get(f"http://127.0.0.1:{replica}/?view=groups")
    assert wait_js(driver, "return window.fp && fp.ready && fp.header", 30), \
        driver.execute_script("return document.body.innerText")
    assert wait_js(driver, "return document.querySelectorAll('#groups tbody tr td').length", 5)
    assert X in driver.execute_script("return document.getElementById('groups').textContent")
    assert X in driver.execute_script("return document.getElementById('summary').textContent")
    assert driver.execute_script(INJECTED) == []

    # a switch whose client state the replica relayed: markup in every field of it
    text = _details(driver, "switch", 1, "#dbody h3")
    assert text.count(X) >= 10, text
    assert "programmed v" + X in text and "term " + X in text
    # a switch whose client could not be read: markup in the error and the URL
    text = _details(driver, "switch", 0, "#d-client-error")
    assert text.count(X) >= 2, text
    # a link
    text = _details(driver, "link", 0, "#dbody h2")
    assert text.count(X) >= 8, text
    assert driver.execute_script(INJECTED) == []
