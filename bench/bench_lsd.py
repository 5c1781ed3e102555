"""LSD benchmark: snapshot size (as a real LsdFull datagram), encode/decode and changes_since times.

    python -m bench.bench_lsd [--quick] [--links N]

The link count defaults to the ``jupiter`` preset of proto.clos (150,000 if that is unavailable).
Prints a table and writes bench/results/lsd.json. Exits 1 if any snapshot datagram exceeds 65,507 bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from proto.auth import KeyRing
from proto.lsd import LinkState, LinkStateDB, decode_changes, decode_snapshot, encode_changes, encode_snapshot
from proto.messages import MAX_DATAGRAM, Codec, LsdDelta, LsdFull

RESULTS = Path(__file__).resolve().parent / "results" / "lsd.json"
DIGEST = "0" * 64
MASTER, SWITCH = "master-1", "tor-000-000"  # names as long as real ones, for honest framing sizes


def default_links() -> tuple[int, str]:
    try:
        from proto.clos import PRESETS

        return PRESETS["jupiter"].n_links, "proto.clos jupiter preset"
    except Exception:  # the generator may not exist yet; any failure -> the documented fallback
        return 150_000, "fallback (no proto.clos jupiter preset)"


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` runs, in milliseconds."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def make_states(n: int, kind: str, rng: random.Random) -> bytes:
    if kind == "all up":
        return bytes([LinkState.UP]) * n
    if kind == "all down":
        return bytes(n)
    if kind == "random 4-state (worst)":
        return bytes(rng.randrange(len(LinkState)) for _ in range(n))
    fraction = float(kind.split()[1].rstrip("%")) / 100
    states = bytearray([LinkState.UP]) * n
    for i in rng.sample(range(n), int(n * fraction)):
        states[i] = LinkState.DOWN
    return bytes(states)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_lsd", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a shorter history")
    parser.add_argument("--links", type=int, default=None, help="number of links (default: jupiter preset)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    n, source = (args.links, "--links") if args.links else default_links()
    repeat = 3 if args.quick else 10
    history = 512 if args.quick else 4096
    rng = random.Random(1)
    ring = KeyRing.from_secret(bytes(32))
    master = Codec(ring, MASTER, [SWITCH], [MASTER])
    result: dict = {"links": n, "links_source": source, "quick": args.quick, "max_datagram": MAX_DATAGRAM,
                    "snapshots": [], "deltas": [], "changes_since": []}
    print(f"LSD benchmark: {n:,} links ({source}){' [quick]' if args.quick else ''}\n")

    # -- snapshots -----------------------------------------------------------------------------------
    print(f"{'state':<24}{'snapshot B':>12}{'datagram B':>12}{'fits':>6}{'encode ms':>11}{'decode ms':>11}")
    ok = True
    for kind in ("all up", "all down", "random 1% down", "random 10% down", "random 50% down",
                 "random 4-state (worst)"):
        states = make_states(n, kind, rng)
        snap = encode_snapshot(states)
        assert decode_snapshot(snap, n) == states
        datagram = master.encode(LsdFull(MASTER, 1, 1, DIGEST, snap), to=SWITCH)
        enc = best_of(lambda s=states: encode_snapshot(s), repeat)
        dec = best_of(lambda s=snap: decode_snapshot(s, n), repeat)
        fits = len(datagram) <= MAX_DATAGRAM
        ok &= fits
        print(f"{kind:<24}{len(snap):>12,}{len(datagram):>12,}{'yes' if fits else 'NO':>6}{enc:>11.2f}{dec:>11.2f}")
        result["snapshots"].append({"state": kind, "snapshot_bytes": len(snap), "datagram_bytes": len(datagram),
                                    "fits": fits, "encode_ms": round(enc, 3), "decode_ms": round(dec, 3)})

    # -- deltas --------------------------------------------------------------------------------------
    print(f"\n{'delta':<24}{'changes B':>12}{'datagram B':>12}{'encode ms':>11}{'decode ms':>11}")
    for k in (1, 100, 1000, n // 10):
        changes = {i: LinkState(rng.randrange(len(LinkState))) for i in rng.sample(range(n), k)}
        enc_bytes = encode_changes(changes)
        datagram = master.encode(LsdDelta(MASTER, 1, 1, 2, enc_bytes), to=SWITCH)
        enc = best_of(lambda c=changes: encode_changes(c), repeat)
        dec = best_of(lambda b=enc_bytes: decode_changes(b, n), repeat)
        label = f"{k:,} links changed"
        print(f"{label:<24}{len(enc_bytes):>12,}{len(datagram):>12,}{enc:>11.2f}{dec:>11.2f}")
        result["deltas"].append({"links_changed": k, "changes_bytes": len(enc_bytes),
                                 "datagram_bytes": len(datagram), "encode_ms": round(enc, 3),
                                 "decode_ms": round(dec, 3)})

    # -- history / changes_since ---------------------------------------------------------------------
    def build() -> tuple[LinkStateDB, float]:
        """A DB with a full history window: bring-up (all links) then small batches, like link flaps."""
        r = random.Random(2)
        db = LinkStateDB(n, history=history)
        db.apply(dict.fromkeys(range(n), LinkState.UP))
        batches = [{i: LinkState(r.randrange(3)) for i in r.sample(range(n), r.randint(1, 10))}
                   for _ in range(2 * history)]
        t0 = time.perf_counter()
        applied = 0
        for batch in batches:
            if db.version >= history:
                break
            db.apply(batch)
            applied += 1
        return db, (time.perf_counter() - t0) / applied * 1e6

    db, apply_us = build()
    tracemalloc.start()
    build()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"\nhistory: {history} versions, {db.retained_changes:,} retained link changes, apply {apply_us:.1f} us/batch,"
          f" peak traced memory {peak / 2**20:.1f} MiB (incl. state and bring-up)")
    result["history"] = {"versions": history, "retained_changes": db.retained_changes,
                         "apply_us_per_batch": round(apply_us, 2), "peak_traced_mib": round(peak / 2**20, 2)}
    print(f"{'changes_since':<24}{'versions':>10}{'links':>10}{'time ms':>11}{'+ encode ms':>18}")
    for back in (1, 10, 100, history - 1):
        v = db.version - back
        delta = db.changes_since(v)
        assert delta is not None
        ms = best_of(lambda v=v: db.changes_since(v), repeat)
        dn = best_of(lambda v=v: encode_changes(db.changes_since(v) or {}), repeat)   # what a delta costs
        label = f"v-{back}"
        print(f"{label:<24}{back:>10}{len(delta):>10,}{ms:>11.3f}{dn:>18.3f}")
        result["changes_since"].append({"versions_back": back, "links_in_delta": len(delta),
                                        "ms": round(ms, 4), "with_encode_ms": round(dn, 4)})
    # a large delta: half the links changed in one batch
    big = LinkStateDB(n, history=16)
    big.apply({i: LinkState.UP for i in range(0, n, 2)})
    ms = best_of(lambda: big.changes_since(0), repeat)
    print(f"{'one batch, n/2 links':<24}{1:>10}{n // 2:>10,}{ms:>11.3f}")
    result["changes_since"].append({"versions_back": 1, "links_in_delta": n // 2, "ms": round(ms, 4)})

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    if not ok:
        print("FAIL: a snapshot does not fit one datagram", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
