"""Read-only REST API and Prometheus metrics of a switch client (stdlib http.server, on its own thread).

    GET  /v1/state   ports (PHY/ND/usable/miscabled/damped), LSD version and term, master in use,
                     programmed version, report and resync counters — see README "Client REST".
    GET  /v1/routes[?prefix=P&ovs=0]
                     the routes as computed next to what OVS holds (read over the client's OpenFlow
                     connection; `ovs=0` skips that), differences marked — see client.routeview.
    POST /v1/reload  (admin token) read the config file again, as SIGHUP does.
    GET  /metrics    the same as Prometheus metrics.

Why the standard library and not aiohttp (issue #20, "a lighter client"): the client serves a handful of
requests a minute; importing aiohttp and running an asyncio loop for them cost ~11 MiB of RSS and ~0.15 s
of CPU at every start (BENCHMARKS "Client REST on http.server"). ThreadingHTTPServer answers each request on
its own short-lived thread, so a slow /v1/routes (an OVS read) never blocks /v1/state or /metrics.
At most MAX_CONNECTIONS at once; each has READ_TIMEOUT seconds in all to send a request, and one that has
waited EVICT_AFTER for its whole request (headers and body) makes room for a new connection (slow-header and
slow-body floods: see those names). A request whose answer does not depend on its body (all but an authorised
POST /v1/reload) is answered from its headers, without waiting for a body.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from proto.argtypes import OutOfRange, parse_prefix, parse_uint
from proto.auth import bearer_denial, unexpected_body

log = logging.getLogger("firepath.client.rest")

StatusFn = Callable[[], dict[str, Any]]
RoutesFn = Callable[..., dict[str, Any]]
ReloadFn = Callable[[], dict[str, Any]]


class ClientCollector:
    """Builds the metrics from one consistent `status()` snapshot at scrape time."""

    def __init__(self, status: StatusFn, refused: Callable[[], int] = lambda: 0,
                 evicted: Callable[[], int] = lambda: 0) -> None:
        self._status = status
        self._refused = refused      # REST connections answered 503 (ClientApi.refused)
        self._evicted = evicted      # REST connections closed to make room (ClientApi.evicted)

    def collect(self) -> Any:
        s = self._status()
        sw = s["switch"]
        gauges = {
            "firepath_client_lsd_version": ("LSD version applied", s["lsd_version"]),
            "firepath_client_programmed_version": ("LSD version programmed in the switch", s["programmed_version"]),
            "firepath_client_term": ("Highest master term seen", s["term"]),
            "firepath_client_fail_static": ("1 when no master is heard (forwarding on the last LSD)",
                                            int(s["fail_static"])),
            "firepath_client_config_mismatch": ("1 when the masters serve another config than this switch runs "
                                                "(nothing programmed from them, forwarding on what is installed)",
                                                int(s.get("config_mismatch") is not None)),
            "firepath_client_connected": ("1 when the OpenFlow connection is up", int(s["connected"])),
            "firepath_client_routes": ("Routes installed", s["routes"]),
            "firepath_client_nd_meters": ("1 when ND punts go through OpenFlow meters (0: switch refused them)",
                                          int(s["nd_meters"])),
            "firepath_client_groups": ("ECMP groups installed", s["groups"]),
            "firepath_client_last_program_seconds": ("Duration of the last programming round",
                                                     s["last_program_ms"] / 1000.0),
        }
        for name, (doc, value) in gauges.items():
            g = GaugeMetricFamily(name, doc, labels=["switch"])
            g.add_metric([sw], value)
            yield g
        ports = GaugeMetricFamily("firepath_client_port_usable", "1 if the fabric port is usable for routing",
                                  labels=["switch", "port", "peer", "nd"])
        for p in s["ports"]:
            ports.add_metric([sw, str(p["port"]), p["peer"], p["nd"]], int(p["usable"]))
        yield ports
        oam = GaugeMetricFamily("firepath_client_port_oam_up",
                                "1 if link OAM (CFM in ovs-vswitchd) says the fabric port is live; state: "
                                "off (software ND), pending, up, fault, miscabled, failed (fell back to ND)",
                                labels=["switch", "port", "state"])
        for p in s["ports"]:
            oam.add_metric([sw, str(p["port"]), p.get("oam", "off")], int(p.get("oam") == "up"))
        yield oam
        counters = CounterMetricFamily("firepath_client_events", "Client event counters", labels=["switch", "event"])
        for event, value in {**client_events(s), "rest_refused": self._refused(),
                             "rest_evicted": self._evicted()}.items():
            counters.add_metric([sw, event], value)
        yield counters


def client_events(s: dict[str, Any]) -> dict[str, float]:
    """The `event` label -> value of firepath_client_events, each event once. The core counts rejected
    datagrams per path (`rejected_<reason>` from masters, `nd_rejected_<reason>` for ND); the codec's own
    tally over both paths is `codec_rejected_<reason>` (it used to be `rejected_<reason>` as well: the same
    series twice in one exposition)."""
    events: dict[str, float] = {"reports_sent": s["reports_sent"], "report_retransmits": s["report_retransmits"],
                                "of_errors": s["of_errors"], "of_retries": s["of_retries"]}
    for prefix, values in (("replica_", s["replica"]), ("", s["counters"]), ("codec_rejected_", s["codec_rejected"])):
        for key, value in values.items():
            events.setdefault(f"{prefix}{key}", value)     # a name taken already keeps its first source
    return events


Answer = tuple[int, str, bytes]          # status, content type, body


def _json(status: int, doc: Any, indent: int | None = None) -> Answer:
    return status, "application/json; charset=utf-8", json.dumps(doc, indent=indent).encode()


class ClientApi:
    """The endpoints as plain functions of (method, path, query, headers) -> Answer: no sockets, so the
    HTTP layer below stays a thin adapter."""

    def __init__(self, status: StatusFn, routes: RoutesFn | None = None, reload: ReloadFn | None = None,
                 token: str | None = None) -> None:
        self.status, self.routes, self.reload, self.token = status, routes, reload, token
        self.registry = CollectorRegistry(auto_describe=False)
        self.refused = 0             # connections the server answered 503 (MAX_CONNECTIONS busy)
        self.evicted = 0             # connections closed, still waiting for a request, to make room (EVICT_AFTER)
        self.registry.register(ClientCollector(status, lambda: self.refused,  # type: ignore[arg-type]
                                               lambda: self.evicted))

    def wants_body(self, method: str, target: str, headers: Any) -> bool:
        """Whether the answer to this request depends on its body: only for a POST /v1/reload this client
        has, with the right token. The HTTP layer answers every other request from its headers, without
        waiting for a body (a slow or never-sent one held its connection, and its thread, until READ_TIMEOUT:
        32 of them to a 404 path locked the API out)."""
        return (method == "POST" and _path(target) == "/v1/reload" and self.reload is not None
                and bearer_denial(headers.get("Authorization"), self.token) is None)

    def handle(self, method: str, target: str, headers: Any, body: bytes = b"") -> Answer:
        """One request: `body` is what the request carried (read by the HTTP layer, at most MAX_BODY; b""
        when wants_body() said its answer does not depend on it)."""
        url = urlsplit(target)
        path = _path(target)
        gets = {"/v1/state": self._state, "/v1/routes": self._routes, "/metrics": self._metrics}
        posts = {"/v1/reload": self._reload}
        table = gets if method in ("GET", "HEAD") else posts if method == "POST" else {}
        if path not in table:
            if path in gets or path in posts:
                return _json(405, {"error": f"{method} {path}: method not allowed"})
            return _json(404, {"error": f"{path}: not found"})
        parsed = parse_qs(url.query, keep_blank_values=True)
        twice = sorted(k for k, v in parsed.items() if len(v) > 1)
        if twice:        # the last one silently won: prefix=A&prefix=B answered for B alone
            return _json(400, {"error": f"query parameter {twice[0][:40]!r} given more than once"})
        query = {k: v[0] for k, v in parsed.items()}
        if table is posts:
            return table[path](query, headers, body)
        return table[path](query, headers)

    def _state(self, _query: dict[str, str], _headers: Any) -> Answer:
        return _json(200, self.status(), indent=1)

    def _metrics(self, _query: dict[str, str], _headers: Any) -> Answer:
        return 200, "text/plain; charset=utf-8", generate_latest(self.registry)

    def _routes(self, query: dict[str, str], _headers: Any) -> Answer:
        if self.routes is None:
            return _json(404, {"error": "routes are not available on this client"})
        raw = query.get("prefix")
        try:     # host bits set (10.0.0.1/8) is a 400, not read as 10.0.0.0/8: proto.argtypes.parse_prefix
            prefix = parse_prefix(raw) if raw is not None else None
        except ValueError as e:
            return _json(400, {"error": str(e)})
        if query.get("ovs", "1") not in ("0", "1"):      # ovs=no read OVS all the same
            return _json(400, {"error": f"ovs: expected 0 (skip reading OVS) or 1, got {query['ovs'][:40]!r}"})
        read_ovs = query.get("ovs", "1") == "1"
        try:
            view = self.routes(prefix, read_ovs)
        except Exception as e:  # noqa: BLE001 - one readable line for the operator, the trace in the log
            log.exception("GET /v1/routes failed")
            return _json(500, {"error": f"routes: {type(e).__name__}: {e}"})
        return _json(200, view, indent=1)

    def _reload(self, _query: dict[str, str], headers: Any, body: bytes = b"") -> Answer:
        """POST /v1/reload (issue #21, admin token): read the config file again, as SIGHUP does. 200
        {"outcome": "unchanged"|"changed", "digest"}: "changed" restarts the client on it, gracefully; 400
        with the file:line:field error for an invalid file, or another config naming another key set
        (proto.keyroll.keys_for_reload; nothing changes); 401/403 without the right
        token; 404 when this client has no reload; 400 for a body other than none or `{}` (nothing done)."""
        if self.reload is None:
            return _json(404, {"error": "reload is not available on this client"})
        denied = bearer_denial(headers.get("Authorization"), self.token)
        if denied is not None:
            return _json(denied[0], {"error": denied[1]})
        why = unexpected_body("POST", "/v1/reload", body)
        if why is not None:
            return _json(400, {"error": why})
        try:
            out = self.reload()
        except ValueError as e:           # ConfigError (file:line:field) or AuthError (a key file, named)
            return _json(400, {"error": str(e)})
        return _json(200, out)


def _path(target: str) -> str:
    return urlsplit(target).path.rstrip("/") or "/"


MAX_BODY = 1 << 16      # no endpoint takes a body: one is read (up to this); POST /v1/reload refuses it
#: Connections served at once (a thread each). More are answered 503 and closed on the accepting thread: a
#: host that opens thousands of connections must not make thousands of threads on a switch's client.
MAX_CONNECTIONS = 32
#: Seconds a connection has to send a whole request (request line, headers, body), counted from its accept
#: or from the previous answer on a keep-alive connection; then it is closed (408 when only the body is
#: late). The master's REST does the same (controller.rest.READ_TIMEOUT). Before, each read waited 30 s
#: afresh, so a byte every few seconds held a connection, and its thread, for ever: 33 such connections
#: answered every other request 503 for as long as they lasted.
READ_TIMEOUT = 10.0
#: When all MAX_CONNECTIONS are busy, a new connection takes the place of the one that has waited longest
#: for its whole request (headers, and the body of an authorised POST /v1/reload), if that one has waited at
#: least this long (seconds); it is closed. A request received whole is never cut. So slow connections hold
#: this API for at most EVICT_AFTER, not READ_TIMEOUT, even when they keep coming back. (A connection whose
#: body was late used to count as a request in progress, never evicted: 32 that sent headers and 1 byte of a
#: 100-byte body answered every other request 503 for READ_TIMEOUT.)
EVICT_AFTER = 1.0
#: Connections the kernel queues for accept() (listen backlog). The stdlib's default 5 left a burst of
#: connections in SYN retransmits (200 at once: 58 timed out after 20 s) instead of a 503 at once; 128 as
#: the master's REST (aiohttp's default).
LISTEN_BACKLOG = 128
_BUSY_BODY = json.dumps({"error": f"too many connections to this REST API (at most {MAX_CONNECTIONS} at once)"}).encode()
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
         b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


class _DeadlineReader(io.RawIOBase):
    """The request side of a connection, each read bounded by what is left of the handler's `read_deadline`
    (TimeoutError past it): a total deadline, where the socket's own timeout restarts at every byte."""

    def __init__(self, sock: socket.socket, handler: _Handler) -> None:
        self._sock, self._handler = sock, handler

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        left = self._handler.read_deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"request not received within {READ_TIMEOUT:g} s")
        self._sock.settimeout(left)
        return self._sock.recv_into(b)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT          # writes; reads follow read_deadline (_DeadlineReader)
    server: _Server
    read_deadline = 0.0

    def setup(self) -> None:
        super().setup()
        self.rfile.close()          # the stdlib's buffered socket file: replaced by one bounded in total
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self))

    def handle_one_request(self) -> None:
        self.read_deadline = time.monotonic() + READ_TIMEOUT
        self.server.waiting(self.connection, True)
        try:
            super().handle_one_request()
        finally:
            self.server.waiting(self.connection, False)

    def _serve(self) -> None:
        framing = _body_length(self.headers)
        if isinstance(framing, tuple):          # the body's end is unknown: answered, and the connection closed
            self.server.waiting(self.connection, False)
            self._send(framing, close=True)
            return
        length, body = framing, b""
        if not self.server.api.wants_body(self.command, self.path, self.headers):
            # answered from its headers; a body not read would be taken for the next request: closed
            self.server.waiting(self.connection, False)
            self._answer(b"", close=length > 0)
            return
        if length:          # still evictable while its body comes: a request is in progress once received whole
            try:
                body = self.rfile.read(length)
            except TimeoutError:                                 # the body came too slowly
                if self.server.waiting(self.connection, False):
                    self._send(_json(408, {"error": f"request not received within {READ_TIMEOUT:g} s"}),
                               close=True)
                self.close_connection = True
                return
        if not self.server.waiting(self.connection, False) or len(body) < length:
            self.close_connection = True        # evicted, or the client left mid-body: nothing done, no answer
            return
        self._answer(body)

    def _answer(self, body: bytes, close: bool = False) -> None:
        try:
            answer = self.server.api.handle(self.command, self.path, self.headers, body)
        except Exception as e:  # noqa: BLE001 - a broken status() must not kill the thread silently
            log.exception("%s %s failed", self.command, self.path)
            answer = _json(500, {"error": f"{type(e).__name__}: {e}"})
        self._send(answer, close=close)

    def _send(self, answer: Answer, close: bool = False) -> None:
        status, ctype, body = answer
        self.connection.settimeout(READ_TIMEOUT)      # the answer's writes: not what is left of the read
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _serve

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's own errors (a malformed request line, headers or version, a URI too long, a method
        with no do_X) as JSON like every other answer, and the connection closed."""
        if code == HTTPStatus.NOT_IMPLEMENTED:      # an unknown method: not allowed on any of our paths
            code, message = HTTPStatus.METHOD_NOT_ALLOWED, f"{self.command} {self.path}: method not allowed"
        if self.request_version == "HTTP/0.9":      # the request line was unreadable: answer in HTTP/1.1
            self.request_version = "HTTP/1.1"
        self._send(_json(int(code), {"error": message or self.responses.get(code, ("error",))[0]}), close=True)

    def handle(self) -> None:
        try:
            super().handle()
        except OSError as e:    # the client left, or stopped reading its answer: its affair, no traceback
            log.debug("rest %s connection lost: %s", self.client_address[0], e)

    def log_message(self, format: str, *args: Any) -> None:   # noqa: A002 - the stdlib's signature
        log.debug("rest %s " + format, self.client_address[0], *args)


def _body_length(headers: Any) -> int | Answer:
    """The length of a request's body from its headers (RFC 9112 §6.3), or the error answer (the connection
    is then closed: where the request ends is unknown). Content-Length: ASCII digits; given more than once
    (or as a list) only with one value — differing values are a framing error (a proxy and this server could
    read two different requests: the first one used to win); Transfer-Encoding is refused, alone (411: no
    chunked bodies here) or with a Content-Length (400: the two conflict)."""
    values = [v.strip() for field in headers.get_all("Content-Length", []) for v in field.split(",")]
    if "Transfer-Encoding" in headers:          # its body would be read as the next request
        if values:
            return _json(400, {"error": "Transfer-Encoding and Content-Length together: the request's end is "
                                        "ambiguous"})
        return _json(411, {"error": "a request body needs a Content-Length (no Transfer-Encoding)"})
    if len(set(values)) > 1:
        return _json(400, {"error": f"Content-Length given {len(values)} times with different values"})
    try:
        return parse_uint(values[0], "Content-Length", MAX_BODY) if values else 0
    except OutOfRange:
        return _json(413, {"error": "request body too large"})
    except ValueError as e:
        return _json(400, {"error": f"bad {e}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    api: ClientApi

    def __init__(self, address: tuple[str, int], handler: type[_Handler], max_connections: int) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._waiting: dict[socket.socket, float] = {}     # connections waiting for a request: since when
        super().__init__(address, handler)

    def waiting(self, conn: socket.socket, yes: bool) -> bool:
        """Mark `conn` waiting for its request (evictable) or not; False when it was no longer waiting
        (evicted: its request must not be acted on)."""
        with self._lock:
            if yes:
                self._waiting[conn] = time.monotonic()
                return True
            return self._waiting.pop(conn, None) is not None

    def _evict(self) -> bool:
        """Close the connection that has waited longest for its request, if at least EVICT_AFTER."""
        with self._lock:
            if not self._waiting:
                return False
            conn, since = min(self._waiting.items(), key=lambda kv: kv[1])
            if time.monotonic() - since < EVICT_AFTER:
                return False
            del self._waiting[conn]
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)       # its thread's read ends at once and gives its slot back
        self.api.evicted += 1
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False) and not (self._evict() and self.slots.acquire(timeout=0.5)):
            self.api.refused += 1
            n = self.api.refused
            if n & (n - 1) == 0:        # 1, 2, 4, 8 ...: logged, not flooded
                log.warning("rest: %d connections refused so far (%d served at once; the latest from %s)",
                            n, MAX_CONNECTIONS, client_address[0])
            with contextlib.suppress(OSError):
                request.settimeout(0.2)
                request.sendall(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN (a DNS lookup at every start); not needed here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)


class RestServer:
    """Serves the client's REST API on host:port from a background thread (port 0: any free port, read
    back from `.port` after start())."""

    def __init__(self, status: StatusFn, host: str, port: int, routes: RoutesFn | None = None,
                 reload: ReloadFn | None = None, token: str | None = None) -> None:
        self.api = ClientApi(status, routes, reload, token)
        self.registry = self.api.registry
        self.host, self.port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve. Raises OSError (e.g. the port is in use) with nothing left running."""
        server = _Server((self.host, self.port), _Handler, MAX_CONNECTIONS)     # binds and listens, or raises
        server.api = self.api
        self._server, self.port = server, server.server_port
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="rest", daemon=True)
        self._thread.start()
        log.info("rest listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(2.0)
        self._server.server_close()
        self._server = None
