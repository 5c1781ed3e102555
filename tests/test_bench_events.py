"""bench_convergence reads the daemons' logs as structured events (issue #11): the very records the client
and the master log, in both renderings, parse back into the times and fields the benchmark measures."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bench.bench_convergence import LogTail, lsd_versions, port_events, programmed
from proto.logsetup import JsonFormatter, KvFormatter, kv


@pytest.mark.parametrize("formatter", [KvFormatter(), JsonFormatter()], ids=["kv", "json"])
def test_client_and_master_events_parse_back(tmp_path: Path, formatter: logging.Formatter) -> None:
    client, master = tmp_path / "client.log", tmp_path / "master.log"
    tails = (LogTail(client), LogTail(master))

    def emit(path: Path, logger: str, msg: object) -> float:
        rec = logging.LogRecord(logger, logging.INFO, __file__, 1, msg, None, None)
        with path.open("a") as f:
            f.write(formatter.format(rec) + "\nnot an event line\n")
        return rec.created

    # the exact calls of client/core.py, client/programmer.py and controller (kv events)
    t_down = emit(client, "firepath.client", kv("port_state", port=2, usable=False, phy=False, nd=False,
                                                 admin=True, damped=False, miscabled_by=None))
    emit(master, "firepath.master", kv("lsd_version", version=7, changes=1, cause="report"))
    t_prog = emit(client, "firepath.client.programmer", kv("programmed", version=7, messages=3,
                                                           excluded=[2, 5], ms=1.25))
    emit(client, "firepath.client.programmer", kv("programmed", version=None, messages=1, excluded=[], ms=0.5))
    lines = tails[0].read()
    assert [ln.event for ln in lines] == ["port_state", "programmed", "programmed"]
    assert port_events(lines, 2, False, t_down - 0.5) == pytest.approx(t_down, abs=0.002)
    assert port_events(lines, 2, True, t_down - 0.5) is None
    assert port_events(lines, 1, False, t_down - 0.5) is None
    progs = programmed(lines)
    assert [(p.version, p.messages, p.excluded, p.ms) for p in progs] == [
        (7, 3, frozenset({2, 5}), 1.25), (None, 1, frozenset(), 0.5)]
    assert progs[0].ts == pytest.approx(t_prog, abs=0.002)
    assert [(v, m) for _, v, m in lsd_versions({"m1": tails[1].read()})] == [(7, "m1")]
