"""A bound on the connections a master's REST API (controller.rest) holds open at once.

aiohttp accepts every connection it is offered. Before this, a host that opened connections and sent nothing
(or a request line a byte at a time) held one file descriptor of the master each, for READ_TIMEOUT seconds
every time: a few thousand of them ran the master out of descriptors (`socket.accept() out of system
resource` tracebacks every second, no operator could reach the API, and the state file or a peer socket
could not be opened any more). Now:

- at most `limit` connections are open at once; one more is answered `503` (JSON, `Retry-After: 1`) and
  closed at once, counted (`refused`) and logged at 1, 2, 4, 8 ... refusals;
- when all are taken, a new connection takes the place of the one that has waited longest without a request
  being handled, if that one has waited at least `evict_after` seconds (it is closed, counted in `evicted`):
  slow or silent connections hold the API for at most `evict_after`, even when they keep coming back. A
  request being handled is never cut (the middleware `gate.middleware` marks it busy), but a client that
  does not read its answer within WRITE_TIMEOUT is closed (`slow_readers`).

The client's REST API (client.rest) has the same bound (MAX_CONNECTIONS, EVICT_AFTER) on its threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("firepath.master.rest")

#: connections a master's REST API serves at once (the CLI, the topology page, scripts: a few each)
MAX_CONNECTIONS = 256
#: seconds a connection may wait without a request being handled before a new one may take its place
EVICT_AFTER = 1.0
#: seconds a client has to take its whole answer: one that does not read (a big /v1/topology, its socket
#: buffers full) held its connection, never evicted since busy, for ever; then it is closed
WRITE_TIMEOUT = 30.0


def busy_answer(limit: int) -> bytes:
    body = json.dumps({"error": f"too many connections to this REST API (at most {limit} at once)"}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s" % (len(body), body))


class _Busy(asyncio.Protocol):
    """A connection over the limit: the 503, then closed (what it sent is not read)."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._answer)
        transport.close()


class _GatedHandler(RequestHandler):
    """aiohttp's connection handler, which tells its gate when its connection closes."""

    __slots__ = ("_gate",)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gate.closed(self)
        super().connection_lost(exc)

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A request aiohttp refuses before any handler (a bad Content-Length, a request line over 8190
        bytes, a bad method or version): its answer in JSON like every other error (it was text/plain)."""
        resp = super().handle_error(request, status, exc, message)
        if not isinstance(resp, web.Response) or resp.content_type == "application/json":
            return resp
        text = " ".join((resp.text or "").split())
        out = web.json_response({"error": text[:300] or f"HTTP {status}"}, status=resp.status)
        out.force_close()
        return out


class ConnectionGate:
    """The protocol factory of the REST listener (see the module doc); `handler_args` are aiohttp's
    RequestHandler keyword arguments (keepalive_timeout, logger, access_log ...), those of the runner."""

    def __init__(self, handler_args: dict[str, Any], limit: int = MAX_CONNECTIONS,
                 evict_after: float = EVICT_AFTER, write_timeout: float = WRITE_TIMEOUT,
                 on_drop: Callable[[str], None] | None = None) -> None:
        self.handler_args = handler_args
        self.on_drop = on_drop or (lambda _reason: None)     # "refused", "evicted", "slow_reader": a metric
        self.limit = limit
        self.evict_after = evict_after
        self.write_timeout = write_timeout
        self.refused = 0
        self.evicted = 0
        self.slow_readers = 0
        self._open: dict[RequestHandler, float] = {}      # connection -> since when it waits (monotonic)
        self._busy: set[RequestHandler] = set()            # handling a request now
        self._closing: set[RequestHandler] = set()         # evicted, not closed yet
        self._answer = busy_answer(limit)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def closed(self, handler: RequestHandler) -> None:
        self._open.pop(handler, None)
        self._busy.discard(handler)
        self._closing.discard(handler)

    def _evict(self) -> bool:
        """Close the connection that has waited longest without a request being handled, if long enough."""
        now = time.monotonic()
        for h, since in list(self._open.items()):
            if h.transport is None and now - since >= self.evict_after:
                self.closed(h)      # made by the factory but never connected (or closed already): not open
        idle = [(since, h) for h, since in self._open.items() if h not in self._busy and h not in self._closing]
        if not idle:
            return False
        since, handler = min(idle, key=lambda x: x[0])
        if now - since < self.evict_after:
            return False
        self._closing.add(handler)
        handler.force_close()     # it waits for a request (or sends one nobody reads): closed now
        self.evicted += 1
        self.on_drop("evicted")
        log.debug("event=rest_connection_evicted waited=%.1f evicted=%d", now - since, self.evicted)
        return True

    def factory(self, server: web.Server) -> Any:
        """The protocol factory for loop.create_server, around aiohttp's `server` (the runner's)."""
        loop = asyncio.get_running_loop()

        def make() -> asyncio.BaseProtocol:
            if len(self._open) - len(self._closing) >= self.limit and not self._evict():
                self.refused += 1
                self.on_drop("refused")
                n = self.refused
                if n & (n - 1) == 0:        # 1, 2, 4, 8 ...: logged, not flooded
                    log.warning("event=rest_connections_refused refused=%d limit=%d", n, self.limit)
                return _Busy(self._answer)
            handler = _GatedHandler(server, loop=loop, **self.handler_args)
            handler._gate = self
            self._open[handler] = time.monotonic()      # counted from now: connection_made runs later
            return handler

        return make

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Marks the connection busy while its request is handled and its answer sent (never evicted then)."""
        proto = request.protocol
        self._busy.add(proto)
        try:
            resp = await handler(request)
            # a plain Response is sent here, so a client slow to read its answer is not cut either (not a
            # FileResponse: its prepare, run again by aiohttp after this, is not idempotent)
            if isinstance(resp, web.Response) and not resp.prepared:
                try:
                    async with asyncio.timeout(self.write_timeout):
                        await resp.prepare(request)
                        await resp.write_eof()
                except ConnectionError:     # the client left: aiohttp's own writing ends it quietly
                    pass
                except TimeoutError:        # a client that does not read its answer: closed
                    self.slow_readers += 1
                    self.on_drop("slow_reader")
                    log.debug("event=rest_slow_reader path=%s slow_readers=%d", request.path, self.slow_readers)
                    proto.force_close()
            return resp
        finally:
            self._busy.discard(proto)
            if proto in self._open:
                self._open[proto] = time.monotonic()     # waits afresh for its next request


class GatedSite(web.TCPSite):
    """web.TCPSite whose listener makes its connections through a ConnectionGate."""

    __slots__ = ("gate",)

    def __init__(self, runner: web.AppRunner, host: str, port: int, gate: ConnectionGate, **kw: Any) -> None:
        super().__init__(runner, host, port, **kw)
        self.gate = gate

    async def start(self) -> None:
        await web.BaseSite.start(self)      # registers the site with its runner (stopped by runner.cleanup())
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.gate.factory(server), self._host, self._port, backlog=self._backlog,
            reuse_address=self._reuse_address)
