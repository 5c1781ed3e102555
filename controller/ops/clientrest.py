"""Reading the switch clients' own REST from where an operator command runs (shared by `firepath status`
and `firepath clients`): each client's `GET /v1/state` on 127.0.0.1:<rest_port> (proto.restaddr) and its lag against the
serving master's LSD version. The master alone cannot know a client's version (a client tells it only in
an LsdRequest, on a gap); the client's own word can."""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from controller.ops.fetch import AnswerError, fetch, loads
from proto.restaddr import MAX_STATE, client_rest_url


def get_json(url: str, timeout: float, limit: int = MAX_STATE) -> dict[str, Any] | str:
    """The JSON object at `url`, or why not (a string: the error, or an answer that is not an object). As the
    master's page reads it (controller.clientfetch): no redirect followed, no proxy, at most `limit` bytes,
    the whole request bounded in time (controller.ops.fetch)."""
    try:
        status, raw = fetch(url, timeout=timeout, limit=limit)
        if status != 200:         # a 3xx too: not followed
            return f"HTTP {status}"
        doc = loads(raw)
        if not isinstance(doc, dict):
            return f"unexpected answer: JSON {type(doc).__name__}, not an object (is firepath serving there?)"
        return doc
    except AnswerError as e:    # too big, too slow, not HTTP: says so itself
        return str(e)
    except Exception as e:  # noqa: BLE001 - reported per node, never fatal
        reason = getattr(e, "reason", None)
        return f"{type(e).__name__}: {reason if reason is not None else e}"


def client_ports(fabric: Any, lab: bool) -> dict[str, int]:
    """{switch: its client's REST port}: the config's `rest_port`; in a lab, the ports the lab gives switches
    the config leaves without one (lab.labports). Switches with neither are left out (not read)."""
    ports = {sw.name: int(sw.rest_port) for sw in fabric.switches if sw.rest_port}
    if lab:
        from lab.labports import LabPorts
        from lab.state import LabError

        with contextlib.suppress(LabError):      # ports that clash: no lab runs this config; read what it names
            ports = {**LabPorts(fabric).rest, **ports}
    return ports


def read_clients(fabric: Any, version: Any, lab: bool, timeout: float) -> dict[str, dict[str, Any]]:
    """{switch: `own_lag`} for every client with a REST port (`client_ports`), read in parallel from
    127.0.0.1 (the caller is in the clients' namespace), against the master's LSD `version`."""
    return {name: own_lag(version, a) for name, a in read_states(client_ports(fabric, lab), timeout).items()}


def read_states(ports: dict[str, int], timeout: float) -> dict[str, dict[str, Any] | str]:
    """{switch: its client's `/v1/state` on 127.0.0.1:<port>, or why it could not be read}, in parallel."""
    names = sorted(ports)
    with ThreadPoolExecutor(max_workers=min(16, len(names)) or 1) as pool:
        answers = list(pool.map(lambda n: get_json(client_rest_url(ports[n]), timeout), names))
    return dict(zip(names, answers, strict=True))


def own_lag(version: Any, state: dict[str, Any] | str) -> dict[str, Any]:
    """What a client says it holds (`state`: its REST `/v1/state`, or why it could not be read) against the
    serving master's LSD `version`: {"lsd_version", "programmed_version", "lag", "programmed_lag"} (lags in
    LSD versions, None when it holds or programmed nothing yet; never below 0: a client read after the master
    may already hold a newer version), or {"error": why}."""
    if isinstance(state, str):
        return {"error": state}
    held, prog = state.get("lsd_version"), state.get("programmed_version")
    if not isinstance(version, int) or not isinstance(held, int) or not isinstance(prog, int):
        return {"error": f"unexpected answer: lsd_version {held!r}, programmed_version {prog!r}"}

    def lag(v: int) -> int | None:
        return None if v < 0 else max(0, version - v)

    return {"lsd_version": held, "programmed_version": prog, "lag": lag(held), "programmed_lag": lag(prog)}
