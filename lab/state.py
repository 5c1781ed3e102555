"""The lab's on-disk record of what it created, so that `lab down` removes exactly that.

One JSON file, ``<lab dir>/lab.json``, rewritten atomically (temp file + rename) *before* each resource is
created (intent first), so a crash half-way through `lab up` leaves a record that covers everything that
may exist. Processes are recorded with their PID *and* kernel start time: a PID that was reused by an
unrelated process after ours died is never signalled. A lock file serialises lab commands on one lab dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "lab.json"
RUNNING_FILE = "running.yaml"      # the text of the config the lab runs (LabState.running)
LOCK_FILE = ".lock"
NETNS_PREFIX = "fplab-"
_NAME_RE = re.compile(r"^[a-z0-9]{1,12}$")


class LabStateError(RuntimeError):
    """The lab record is missing, unreadable or inconsistent with the request."""


def check_lab_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise LabStateError(f"lab name {name!r}: 1..12 lower-case letters or digits")
    return name


def lab_netns(name: str) -> str:
    return f"{NETNS_PREFIX}{name}"


def host_netns(name: str, host: str) -> str:
    return f"{NETNS_PREFIX}{name}-{host}"


def switch_netns(name: str, index: int) -> str:
    """The namespace of the switch at position `index` of `switches:` (its OVS, its ports, its IP stack)."""
    return f"{NETNS_PREFIX}{name}-sw{index}"


def default_dir(name: str) -> Path:
    return Path("/tmp") / f"{NETNS_PREFIX}{name}"


# ---------------------------------------------------------------------------------------------- lab dir

#: Written in a directory when a lab is first brought up there (kept by `lab down`): the directory is the
#: lab's, and what the lab writes and removes there is its own.
LAB_MARK = ".firepath-lab"
#: What a lab removes or replaces in its directory: `lab up` removes state/ and logs.prev/, renames logs/,
#: replaces ovs/ and bgp/ and writes running.yaml; `lab down` removes ovs/ and state/ (logs/ with --purge); a
#: generated config overwrites fabric.yaml, fabric.key and admin.token.
LAB_REPLACES = ("state", "ovs", "logs", "logs.prev", "bgp", "running.yaml")
LAB_GENERATES = ("fabric.yaml", "fabric.key", "admin.token")


def is_lab_dir(lab_dir: Path | str, name: str | None = None) -> bool:
    """`lab_dir` is a lab's own: the default one of lab `name`, marked by a lab up, or holding a lab record."""
    d = Path(lab_dir)
    return ((name is not None and d.resolve() == default_dir(name).resolve()) or (d / LAB_MARK).exists()
            or (d / STATE_FILE).exists())


def lab_dir_problem(lab_dir: Path | str, name: str, generates: bool) -> str | None:
    """Why `lab up` must not use `lab_dir`, or None. A directory that is not a lab's may be used only if it
    holds nothing the lab would remove or replace there (`generates`: the lab writes its own config too):
    `lab up --dir .` in a config directory overwrote its fabric.key and removed its state/ (tester)."""
    d = Path(lab_dir)
    if not d.exists():
        return None
    if not d.is_dir():
        return f"--dir {d}: not a directory"
    if is_lab_dir(d, name):
        return None
    clash = [n for n in (*LAB_REPLACES, *(LAB_GENERATES if generates else ())) if (d / n).exists()
             or (d / n).is_symlink()]
    if not clash:
        return None
    return (f"--dir {d} is not a lab directory and holds {', '.join(clash)}, which a lab would remove or overwrite "
            f"there (it keeps state/, ovs/, logs/, logs.prev/, bgp/ and running.yaml of its own"
            + (", and writes fabric.yaml, fabric.key and admin.token" if generates else "")
            + "): give a new or empty directory")


def mark_lab_dir(lab_dir: Path | str, name: str) -> None:
    d = Path(lab_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / LAB_MARK).write_text(f"firepath lab {name}: this directory is the lab's (`firepath lab up --dir`)\n")


# ---------------------------------------------------------------------------------------------- registry

#: One file per lab up on this machine, named after the lab, holding its directory: `--name NAME` (lab
#: commands) and `--lab NAME` (operator commands) find a lab started with `lab up --dir DIR` through it. On
#: tmpfs, like the network namespaces (one `fplab-NAME` per name, so at most one lab of a name is up).
REGISTRY_DIR = Path("/run/firepath/labs")


def register(name: str, lab_dir: Path | str) -> None:
    """Record that lab `name` lives in `lab_dir` (atomic replace); OSError if the registry is not writable."""
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    path = REGISTRY_DIR / check_lab_name(name)
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_text(f"{Path(lab_dir).resolve()}\n")
    os.replace(tmp, path)


def unregister(name: str, lab_dir: Path | str) -> None:
    """Forget lab `name` if the registry still names `lab_dir` for it (another lab of that name may have been
    registered since); never raises."""
    with contextlib.suppress(OSError):
        path = REGISTRY_DIR / name
        if path.read_text().strip() == str(Path(lab_dir).resolve()):
            path.unlink()


def registered_dir(name: str) -> Path | None:
    """The directory the registry names for lab `name` if it still holds that lab's record, else None (no
    entry; a stale one: the lab is gone or its directory now holds another lab)."""
    try:
        d = Path((REGISTRY_DIR / name).read_text().strip())
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return d if d.is_absolute() and LabState.load(d).name == name else None
    except LabStateError:
        return None


def find_lab_dir(name: str) -> Path:
    """The directory of lab `name`: its default one (/tmp/fplab-NAME) when that holds a record, else the one
    the registry names (a lab started with `--dir`), else the default one (which has no record: the caller
    says so, e.g. with `not_found`)."""
    d = default_dir(name)
    if LabState.exists(d):
        return d
    return registered_dir(name) or d


def registered_labs() -> dict[str, Path]:
    """{name: directory} of every lab in the registry that still holds its record, by name."""
    try:
        names = sorted(p.name for p in REGISTRY_DIR.iterdir() if not p.name.startswith("."))
    except OSError:
        return {}
    return {n: d for n in names if (d := registered_dir(n)) is not None}


def not_found(name: str, remedy: str) -> str:
    """One line: lab `name` is neither in its default directory nor in the registry, the labs that are, and
    `remedy` (what the caller's command takes instead, e.g. "pass --dir DIR")."""
    up = registered_labs()
    where = "; ".join(f"{n} in {p}" for n, p in up.items()) or "none"
    return (f"lab {name}: no {default_dir(name) / STATE_FILE} and no lab of that name in {REGISTRY_DIR} "
            f"(is it up? `firepath lab up --name {name}`; labs registered here: {where}); {remedy}")


# ---------------------------------------------------------------------------------------------- processes

def proc_starttime(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of a live, non-zombie process; None otherwise."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])      # field 22 of stat; [0] here is field 3


def proc_stopped(pid: int) -> bool:
    """True if the process is stopped by a signal (SIGSTOP, SIGTSTP: state T) or traced (t)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


@dataclass(slots=True)
class ProcRecord:
    """A process the lab started: `kind` is "master" or "client", `name` the master id or switch name."""

    kind: str
    name: str
    pid: int
    starttime: int
    argv: list[str]
    log: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def alive(self) -> bool:
        return proc_starttime(self.pid) == self.starttime

    def stopped(self) -> bool:
        """Alive but stopped (SIGSTOP): it answers nothing, and no lab fault records it."""
        return self.alive() and proc_stopped(self.pid)

    def send_signal(self, signum: int) -> bool:
        """Send a signal only if the PID is still this process; True if sent."""
        if not self.alive():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)
            return True
        return False

    def stop(self, timeout: float = 5.0, signum: int = signal.SIGTERM) -> None:
        """Signal, wait (bounded) for exit, SIGKILL if needed."""
        if not self.send_signal(signum):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            time.sleep(0.01)
        if self.send_signal(signal.SIGKILL):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive():
                time.sleep(0.01)


# ---------------------------------------------------------------------------------------------- state

@dataclass(slots=True)
class LabState:
    name: str
    dir: str
    config: str                              # fabric YAML the daemons run with
    phase: str = "building"                  # building | up | down
    netns: str = ""                          # the lab namespace (the daemons; with a shared OVS also it, the veths)
    host_netns: dict[str, str] = field(default_factory=dict)      # host -> namespace
    ovs_dir: str = ""
    bridges: dict[str, str] = field(default_factory=dict)         # switch -> bridge name
    ifaces: dict[str, str] = field(default_factory=dict)          # "switch:port" -> ifname (lab ns)
    # ifname -> namespace, for interfaces that are not in `netns` (one namespace per switch: the OVS lab's
    # default, the FRR peer in bench/peers); empty for a lab with one shared OVS, where all are in `netns`
    iface_netns: dict[str, str] = field(default_factory=dict)
    # switch -> its own namespace, where its own OVS runs (lab/plumbing.py); empty: one OVS in `netns` for all
    switch_ns: dict[str, str] = field(default_factory=dict)
    cabling: list[list[str]] = field(default_factory=list)        # current veth pairs [ifname, ifname]
    processes: dict[str, ProcRecord] = field(default_factory=dict)  # ProcRecord.key -> record
    faults: list[dict[str, object]] = field(default_factory=list)   # undo log, oldest first
    daemons: bool = True                     # False: plumbing only (no masters/clients)
    external_masters: bool = False           # masters run outside the lab (lab/external.py)
    cpn: dict[str, object] = field(default_factory=dict)          # the CPN link to them (CpnLink.record())
    bringup_s: float | None = None
    # what a `reload --grow` recorded and is building (switches, links, hosts); left non-empty when it was
    # interrupted: the record then names things that may be half built (lab/grow.py refuses to go on)
    growing: list[str] = field(default_factory=list)
    # the digest of the config the lab runs (set by lab up and by a committed `lab reload`; its text is kept
    # in RUNNING_FILE): until a reload commits it, an edit of `config` is not what the lab runs (lab/labconfig.py)
    running: str = ""
    created_unix: float = field(default_factory=time.time)       # for display only

    @property
    def path(self) -> Path:
        return Path(self.dir) / STATE_FILE

    def save(self) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = asdict(self)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, lab_dir: Path | str) -> LabState:
        path = Path(lab_dir) / STATE_FILE
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise LabStateError(f"{path}: no lab here (run `firepath lab up` first)") from None
        except (OSError, ValueError, RecursionError) as e:     # not JSON, not UTF-8, nested too deep
            raise LabStateError(f"{path}: unreadable lab record: {str(e)[:200]}") from e
        try:
            doc["processes"] = {k: ProcRecord(**v) for k, v in doc.get("processes", {}).items()}
            return cls(**doc)
        except (TypeError, AttributeError) as e:      # a record of another shape (a list, processes not a map)
            raise LabStateError(f"{path}: lab record has unexpected fields: {str(e)[:200]}") from e

    @staticmethod
    def exists(lab_dir: Path | str) -> bool:
        return (Path(lab_dir) / STATE_FILE).exists()

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # --- convenience
    def masters(self) -> list[ProcRecord]:
        return [p for p in self.processes.values() if p.kind == "master"]

    def clients(self) -> list[ProcRecord]:
        return [p for p in self.processes.values() if p.kind == "client"]

    def netns_of(self, ifname: str) -> str:
        """The namespace an interface of the fabric lives in."""
        return self.iface_netns.get(ifname, self.netns)

    def ns_of_switch(self, switch: str) -> str:
        """The namespace of a switch's bridge and ports (its own, or the lab's with a shared OVS)."""
        return self.switch_ns.get(switch, self.netns)


_held = threading.local()       # lab dirs whose lock this thread holds -> nesting depth


@contextlib.contextmanager
def locked(lab_dir: Path | str, timeout: float = 120.0) -> Iterator[None]:
    """Exclusive lock on the lab dir for the duration of one lab command (bounded wait).

    Re-entrant within a thread (`heal` inside a CLI command that already holds it, `lab up --clean`
    tearing down first): flock() conflicts between two open files even in one process, so nested uses
    must not open the lock file again.
    """
    d = Path(lab_dir)
    key = str(d.resolve())
    depth: dict[str, int] = _held.__dict__.setdefault("depth", {})
    if depth.get(key):
        depth[key] += 1
        try:
            yield
        finally:
            depth[key] -= 1
        return
    d.mkdir(parents=True, exist_ok=True)
    with open(d / LOCK_FILE, "w") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabStateError(f"{d}: another lab command holds the lock") from None
                time.sleep(0.05)
        depth[key] = 1
        try:
            yield
        finally:
            depth.pop(key, None)
            fcntl.flock(f, fcntl.LOCK_UN)


def say(msg: str) -> None:
    """A lab command's progress line, on stdout at once: through a pipe (`lab up | tee`, a test reading it
    line by line, a Ctrl-C between two steps) a buffered line would show up only at the end."""
    print(msg, flush=True)


class LabError(RuntimeError):
    """A lab operation cannot proceed; the message says what to do."""
