"""What a master's REST API (controller.rest) does with input it cannot use, before or around its handlers:
every error answer JSON, a malformed request the sender's affair (a 4xx and at most one short debug line,
never an error-level traceback), and JSON bodies held to one value per key.

- `json_errors`: aiohttp's own 404/405/413 as JSON; a body aiohttp cannot decode (`Content-Encoding: gzip`
  over garbage: `ContentEncodingError`, any `HttpProcessingError`) 400; a handler's bug a JSON 500 with its
  traceback in the log (that one is ours).
- `client_gone`: a connection reset mid-request is one debug line.
- `strict_json_bodies`: a JSON body with a key twice (`{"switch": "spine-1", "switch": "spine-2"}`, which
  json.loads reads as the last one: it drained spine-2) is refused 400 naming the key, on every endpoint,
  before its handler reads it (then from aiohttp's cache). Only for an authorized request: no handler reads
  another's body, so an anonymous one costs no parse.
  The actions that take no body (`NO_BODY`: rollout commit/abort, reload) refuse one that is
  not empty or `{}` with a 400 before anything is done: such a body used to be ignored, so garbage, or a
  parameter those endpoints do not have (`POST /v1/reload {"config": "other.yaml"}` reloaded the replica's
  own file and answered 200), still published held links DOWN or committed a rollout.
- `QuietServerLog`: aiohttp's server logger, for the requests aiohttp refuses before any handler (a request
  line over 8190 bytes: `LineTooLong`, a bad header, a body it cannot decode while discarding it): aiohttp
  logs each at ERROR with a traceback (~1 KB: 200 such requests grew the log by 200 KB); here one short
  debug line each, counted in `bad_requests`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proto.auth import unexpected_body

log = logging.getLogger("firepath.master.rest")

Check = Callable[[web.Request], web.Response | None]
#: what aiohttp raises for a request it cannot parse, or a body it cannot read (RequestPayloadError wraps a
#: ContentEncodingError when a handler reads it, or while aiohttp discards a body nobody read)
BAD_INPUT = (HttpProcessingError, web.RequestPayloadError)


class DuplicateKey(ValueError):
    """A JSON object with the same key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r} in the JSON body (each key at most once)")
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise DuplicateKey(k)
        out[k] = v
    return out


def loads_strict(text: str | bytes) -> Any:
    """json.loads that refuses an object with a key twice (DuplicateKey, a ValueError), at any depth."""
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _short(exc: BaseException) -> str:
    """`LineTooLong: Got more than 8190 bytes ...` on one line, at most ~160 characters."""
    text = exc.message if isinstance(exc, HttpProcessingError) else str(exc)
    text = " ".join(str(text).split())
    return f"{type(exc).__name__}: {text[:140]}{'...' if len(text) > 140 else ''}"


def error_response(status: int, message: str, **extra: Any) -> web.Response:
    """The JSON error answer of every master endpoint: {"error": message, **extra}."""
    return web.json_response({"error": message, **extra}, status=status,
                             dumps=lambda d: json.dumps(d, indent=1))


@web.middleware
async def client_gone(request: web.Request, handler: Any) -> web.StreamResponse:
    """A client that resets its connection mid-request is the client's affair: one debug line, not an
    error with a traceback in the master's log."""
    try:
        return await handler(request)
    except ConnectionResetError as e:
        log.debug("event=rest_connection_reset remote=%s method=%s path=%s error=%r", request.remote,
                  request.method, request.path, str(e))
        raise web.HTTPBadRequest(text="connection reset") from None


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error body is JSON, as docs/API.md says: aiohttp's own 404 (no such path) and 405 (method) come
    as plain text otherwise; a body that cannot be decoded is the sender's 400, not our 500."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or e.content_type == "application/json":
            raise
        return web.json_response({"error": e.text or e.reason}, status=e.status, headers={
            k: v for k, v in e.headers.items() if k.lower() == "allow"})
    except BAD_INPUT as e:      # e.g. Content-Encoding: gzip over garbage (logged once, by QuietServerLog,
        return error_response(400, f"unreadable request body: {_short(e)}")     # when aiohttp discards the rest)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    except Exception as e:      # noqa: BLE001 - a handler's bug: JSON like every answer, the trace in the log
        log.exception("event=rest_error method=%s path=%s", request.method, request.path)
        return web.json_response({"error": f"internal error: {type(e).__name__}: {e}"}, status=500)


#: (method, path) of the master's actions that take no request body (docs/API.md).
# (guard confirm takes {"links": [...]} or nothing, and its handler refuses anything else itself)
NO_BODY = frozenset({("POST", "/v1/rollout/commit"), ("POST", "/v1/rollout/abort"), ("POST", "/v1/reload")})


def strict_json_bodies(check: Check, read_timeout: float, no_body: frozenset[tuple[str, str]] = NO_BODY) -> Any:
    """Middleware: the body of an authorized request (`check(request)` None) is read within `read_timeout`
    (else 408) and refused 400 if it is JSON with a key twice, or if the endpoint is one of `no_body` and the
    body is not empty or `{}` (`unexpected_body`); what else is wrong with it is left to the handler (its
    own 400 says what it expects)."""

    @web.middleware
    async def strict(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.body_exists and check(request) is None:
            try:
                async with asyncio.timeout(read_timeout):
                    raw = await request.read()
            except TimeoutError:
                return error_response(408, f"request body not received within {read_timeout:g} s")
            try:
                loads_strict(raw)
            except DuplicateKey as e:
                return error_response(400, str(e), duplicate_key=e.key)
            except (ValueError, RecursionError):
                pass                    # not JSON (or too deep): the handler answers it
            if (request.method, request.path) in no_body:
                why = unexpected_body(request.method, request.path, raw)
                if why is not None:
                    return error_response(400, why)
        return await handler(request)

    return strict


class QuietServerLog:
    """aiohttp's server logger (`logger=` of its request handler): a request aiohttp refuses itself (an
    `HttpProcessingError`: LineTooLong, BadStatusLine, a bad header, a body it cannot decode) is one debug
    line and a count, not an ERROR with a traceback; anything else goes to the wrapped logger unchanged."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("aiohttp.server")
        self.bad_requests = 0

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kw: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, BAD_INPUT):
            self.bad_requests += 1
            log.debug("event=rest_bad_request count=%d error=%r", self.bad_requests, _short(exc))
            return
        self._log.exception(msg, *args, exc_info=exc_info, **kw)

    def debug(self, msg: str, *args: Any, exc_info: Any = None, **kw: Any) -> None:
        if isinstance(exc_info, BAD_INPUT):      # aiohttp's "bad method" case: one line, no trace
            self.exception(msg, *args, exc_info=exc_info)
            return
        self._log.debug(msg, *args, exc_info=exc_info, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._log, name)
