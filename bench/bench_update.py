"""One client's CPU for one LSD delta, stage by stage: what a remote switch spends of its own when a link
elsewhere in the fabric goes down or comes back (issue #20: where a remote switch's reprogramming time goes).

    python -m bench.bench_update [--fabrics 2x4,4x16] [--switch leaf-3] [--changes 200]

In one process, no sockets, no threads (CPU of the stages, perf_counter): an `LsdDelta` of one link goes
through the client's replica (`client.replica.LsdReplica.on_delta`: decode, checks, apply), its route update
(`client.routes.RouteComputer.update`), its OpenFlow plan (`client.ofplan.OfPlanner.update`) and the
serialization of the planned messages (`client.of.wire.WireCache`, os-ken underneath; cache hits once a
link has failed before). Links at the switch itself are skipped (those are local repair). Medians in µs.
The lab's end-to-end figures (bench_convergence) add the runtime around these: UDP, decode, thread
hand-offs, os-ken, OVS. Results: a line per fabric and bench/results/update.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from client.of.wire import WireCache
from client.ofplan import OfPlanner
from client.replica import LsdApplied, LsdReplica
from client.routes import RouteComputer
from proto.clos import clos_fabric
from proto.lsd import LinkState, LinkStateDB, encode_changes
from proto.messages import LsdDelta, LsdFull

RESULTS = Path(__file__).resolve().parent / "results" / "update.json"
STAGES = ("replica", "routes", "plan", "serialize", "total")


def _datapath() -> Any:
    from os_ken.ofproto import ofproto_protocol, ofproto_v1_5

    class Dp(ofproto_protocol.ProtocolDesc):    # what WireCache needs of os-ken's Datapath
        xid = 0

        def set_xid(self, msg: Any) -> int:
            self.xid += 1
            msg.set_xid(self.xid)
            return self.xid

    return Dp(ofproto_v1_5.OFP_VERSION)


def measure(spines: int, leaves: int, switch: str, changes: int) -> dict[str, Any]:
    f = clos_fabric(pods=0, leaves=leaves, spines=spines, masters=1)
    n = len(f.links)
    master = LinkStateDB(n)
    master.apply({i: LinkState.UP for i in range(n)})
    replica = LsdReplica(f, switch)
    replica.on_full(LsdFull("m1", 1, master.version, f.digest, master.snapshot()), 0.0)
    routes = RouteComputer(f, switch)
    planner = OfPlanner(f, switch, auto_commit=False)
    planner.set_routes(routes.compute(replica.states()), frozenset())
    planner.commit()
    wire = WireCache(_datapath(), "dp_hash")
    times: dict[str, list[float]] = {k: [] for k in STAGES}
    messages = 0
    for k in range(changes):
        link = (k * 7) % n
        if switch in (f.links[link].a.switch, f.links[link].b.switch):
            continue
        before = master.version
        master.apply({link: LinkState.DOWN if master.state(link) == LinkState.UP else LinkState.UP})
        delta = LsdDelta("m1", 1, before, master.version, encode_changes(master.changes_since(before)))
        t0 = time.perf_counter()
        applied = [a for a in replica.on_delta(delta, 1.0) if isinstance(a, LsdApplied)][0]
        t1 = time.perf_counter()
        route_delta = routes.update(applied.states, set(applied.changed))
        t2 = time.perf_counter()
        msgs = planner.update(route_delta, frozenset())
        planner.commit()
        t3 = time.perf_counter()
        for m in msgs:
            wire.encode(m)
        t4 = time.perf_counter()
        messages += len(msgs)
        for key, a, b in (("replica", t0, t1), ("routes", t1, t2), ("plan", t2, t3), ("serialize", t3, t4),
                          ("total", t0, t4)):
            times[key].append((b - a) * 1e6)
    samples = len(times["total"])
    return {"fabric": f"{spines}x{leaves}", "switch": switch, "deltas": samples,
            "messages_per_delta": round(messages / max(1, samples), 2),
            "median_us": {k: round(statistics.median(v), 1) for k, v in times.items()},
            "p99_us": {k: round(sorted(v)[int(0.99 * (len(v) - 1))], 1) for k, v in times.items()},
            "wire_cache": {"hits": wire.hits, "misses": wire.misses}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.bench_update", description=__doc__.split("\n")[0])
    ap.add_argument("--fabrics", default="2x4,4x16", help="SPINESxLEAVES leaf-spine fabrics, comma-separated")
    ap.add_argument("--switch", default="leaf-3")
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    results = []
    for spec in args.fabrics.split(","):
        spines, _, leaves = spec.partition("x")
        r = measure(int(spines), int(leaves), args.switch, args.changes)
        results.append(r)
        print(f"{r['fabric']:>6} {r['switch']}: median " + ", ".join(f"{k} {v} µs" for k, v in r["median_us"].items())
              + f"; {r['messages_per_delta']} messages per delta; wire cache {r['wire_cache']}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"benchmark": "update", "results": results,
                                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
