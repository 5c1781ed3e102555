"""REST calls of the operator commands: find the serving master, send drains with the admin token, read a
switch client. Every failure is an `OpsError` carrying one line for the operator and the exit code.

Exit codes (documented in `firepath --help` and docs/API.md; scripts may rely on them):

    0  done / healthy
    1  done, but the answer is bad news: `routes` found differences, an unexpected server answer
    2  usage or local input: bad arguments, unreadable config or token file
    3  unreachable: no master serving (or no answer), the switch client's REST not answering
    4  denied: no token, or the master refused it (401/403)
    5  unknown: no such link, switch or prefix in the fabric
    6  refused: the drain would disconnect ToR pairs (use --force)
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from controller.ops.fetch import fetch, loads
from proto.config import Fabric

OK, BAD_NEWS, USAGE, UNREACHABLE, DENIED, UNKNOWN, REFUSED = 0, 1, 2, 3, 4, 5, 6
TOKEN_ENV = "FIREPATH_TOKEN"
TOKEN_FILE_ENV = "FIREPATH_TOKEN_FILE"
MAX_LEADER_HOPS = 3


class OpsError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def request(url: str, method: str = "GET", body: Any = None, token: str | None = None,
            timeout: float = 2.0) -> tuple[int, Any]:
    """(HTTP status, decoded JSON body). Connection failures and answers that are not HTTP raise OSError
    (controller.ops.fetch: no proxy, no redirect, bounded size and time); a body that is not JSON
    ValueError on a 2xx, {"error": its text} on any other status (a 3xx is not followed)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    status, raw = fetch(url, method, data, headers, timeout)
    if status < 300:
        return status, loads(raw or b"null")
    try:
        return status, loads(raw)
    except ValueError:
        return status, {"error": raw.decode(errors="replace")[:200] or f"HTTP {status}"}


def master_note(header: dict[str, Any]) -> str:
    """What an operator should know of a replica beyond role and term (a REST answer's header): it cannot
    save its state (a full disk: it neither stands nor votes, controller.server `persist_error`), or it holds
    its first LSD after a cold mastership, or its drastic-change guard holds links it was told are down (a
    tester found `firepath status` and `masters` silent while the guard held half the fabric's links: only
    `GET /v1/guard` said so)."""
    notes = []
    if header.get("persist_error"):
        notes.append(f"cannot save its state: {header['persist_error']}")
    if header.get("held"):
        notes.append("holding first LSD")
    held = header.get("guard_held")
    if isinstance(held, int) and not isinstance(held, bool) and held > 0:
        notes.append(f"guard holds {held} link(s) down-reported (`firepath guard` lists them, `--confirm` publishes them)")
    return "; ".join(notes)


def _term(header: dict[str, Any]) -> int:
    term = header.get("term")
    return term if isinstance(term, int) and not isinstance(term, bool) else -1


def _reason(e: Exception) -> str:
    r = getattr(e, "reason", None)
    return str(r if r is not None else e)


def read_token(fabric: Fabric, token_file: str | None) -> str:
    """The admin token: --token-file, else $FIREPATH_TOKEN, else $FIREPATH_TOKEN_FILE, else the config's
    security.admin_token_file. OpsError(USAGE) when a named file cannot be read, DENIED when there is none."""
    from proto.auth import AuthError, read_admin_token, token_problem

    if token_file is None and os.environ.get(TOKEN_ENV):
        token = os.environ[TOKEN_ENV].strip()
        problem = token_problem(token)
        if problem:
            raise OpsError(USAGE, f"${TOKEN_ENV}: {problem}")
        return token
    path: str | Path | None = token_file or os.environ.get(TOKEN_FILE_ENV)
    where = "--token-file" if token_file else f"${TOKEN_FILE_ENV}"
    if path is None and fabric.security.admin_token_file is not None:
        path, where = fabric.security.admin_token_file, fabric.security.admin_token_where   # file:line: field
    if path is None:
        raise OpsError(DENIED, f"no admin token: pass --token-file, set ${TOKEN_ENV}, or set "
                               "security.admin_token_file in the config")
    try:
        return read_admin_token(Path(path), where)
    except AuthError as e:
        raise OpsError(USAGE, str(e)) from None


class Masters:
    """The configured masters (their address and rest_port only: nothing else is contacted)."""

    def __init__(self, fabric: Fabric, timeout: float = 2.0) -> None:
        self.fabric = fabric
        self.timeout = timeout
        self.url = {m.id: f"http://{m.address}:{m.rest_port}" for m in fabric.masters}

    def ask_all(self, path: str) -> dict[str, tuple[int, Any] | Exception]:
        """GET `path` from every master in parallel; an unreachable one maps to its exception."""
        def one(mid: str) -> tuple[int, Any] | Exception:
            try:
                return request(self.url[mid] + path, timeout=self.timeout)
            except (OSError, ValueError) as e:
                return e
        ids = list(self.url)
        with ThreadPoolExecutor(max_workers=min(16, len(ids)) or 1) as pool:
            return dict(zip(ids, pool.map(one, ids), strict=True))

    def serving(self) -> str:
        """The id of the one master that says it serves; OpsError(UNREACHABLE) naming each replica's answer."""
        answers = self.ask_all("/v1/lsd/version")
        serving = [mid for mid, a in answers.items()
                   if isinstance(a, tuple) and a[0] == 200 and isinstance(a[1], dict) and a[1].get("role") == "master"]
        if len(serving) == 1:
            return serving[0]
        if len(serving) > 1:     # several claim it (a partition): the highest term is the current one
            return max(serving, key=lambda mid: _term(answers[mid][1]))  # type: ignore[index]
        seen = []
        for mid, a in answers.items():
            if isinstance(a, Exception):
                seen.append(f"{mid} {self.url[mid]}: {_reason(a)}")
            else:
                seen.append(f"{mid}: {a[1].get('role', '?') if isinstance(a[1], dict) else a[0]}")
        raise OpsError(UNREACHABLE, "no master serving (" + "; ".join(seen) + ")")

    def get(self, path: str, master: str | None = None) -> tuple[str, Any]:
        """(master id, JSON) of GET `path` from `master` or the serving master."""
        mid = master or self.serving()
        try:
            status, body = request(self.url[mid] + path, timeout=self.timeout)
        except (OSError, ValueError) as e:
            raise OpsError(UNREACHABLE, f"master {mid} {self.url[mid]}: {_reason(e)}") from None
        if status != 200:
            raise OpsError(BAD_NEWS, f"master {mid}: GET {path}: HTTP {status}: {_error(body)}")
        return mid, body

    def write(self, method: str, path: str, body: Any, token: str) -> tuple[str, Any]:
        """Send a drain to the serving master, following `leader` on a 409 (a failover in between)."""
        mid = self.serving()
        for _ in range(MAX_LEADER_HOPS):
            try:
                status, answer = request(self.url[mid] + path, method, body, token, self.timeout)
            except (OSError, ValueError) as e:
                raise OpsError(UNREACHABLE, f"master {mid} {self.url[mid]}: {_reason(e)}") from None
            if status == 200:
                return mid, answer
            if status == 409 and isinstance(answer, dict) and answer.get("leader") in self.url \
                    and answer["leader"] != mid:
                mid = answer["leader"]
                continue
            if status in (401, 403):
                raise OpsError(DENIED, f"master {mid} refused the token: {_error(answer)}")
            if status == 400 and isinstance(answer, dict) and answer.get("unknown"):
                raise OpsError(UNKNOWN, _error(answer))
            if status == 400 and isinstance(answer, dict) and answer.get("refused") is True:
                raise OpsError(REFUSED, f"master {mid} refused: {_error(answer)}")     # e.g. the drain book is full
            if status == 409 and isinstance(answer, dict) and answer.get("not_held"):
                raise OpsError(REFUSED, f"master {mid} refused: {_error(answer)}")     # a guard confirm's links
            if status == 409:
                raise OpsError(UNREACHABLE, f"master {mid}: {_error(answer)}")
            raise OpsError(BAD_NEWS, f"master {mid}: {method} {path}: HTTP {status}: {_error(answer)}")
        raise OpsError(UNREACHABLE, f"no master kept mastership for {MAX_LEADER_HOPS} tries")


def _error(body: Any) -> str:
    return str(body.get("error")) if isinstance(body, dict) and body.get("error") else str(body)[:200]


def client_get(address: str, path: str, timeout: float) -> Any:
    try:
        status, body = request(f"http://{address}{path}", timeout=timeout)
    except (OSError, ValueError) as e:
        raise OpsError(UNREACHABLE, f"switch client REST {address}: {_reason(e)}") from None
    if status != 200:
        raise OpsError(BAD_NEWS if status != 400 else USAGE, f"switch client {address}: HTTP {status}: {_error(body)}")
    return body
