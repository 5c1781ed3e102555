"""Fabric keys and replay protection.

One fabric secret (hex in a file, ``firepath config keygen FILE``) yields every key by
HMAC-SHA256(secret, label):

=========  ======================  =======================================================
kind       label                   used for
=========  ======================  =======================================================
SWITCH     ``switch:<name>``       a switch's reports, and a master's unicast to that switch
MASTER     ``master:<id>``         master <-> master (FMRP)
GROUP      ``group``               master multicast to clients
ND         ``nd``                  neighbor discovery frames (link-local, so fabric-wide)
=========  ======================  =======================================================

A switch should not hold the fabric secret: ``KeyRing.bundle_for_switch(name)`` is a restricted ring with
only its own switch key plus the group and ND keys, so a compromised switch cannot derive, and therefore
cannot speak with, another switch's key. Caveat: the GROUP key is shared by every switch (HMAC cannot
authenticate the source of multicast), so in multicast mode a compromised switch could forge master
multicast to other switches; receivers in unicast mode should refuse GROUP (``Codec(accept_group=False)``).

Bundle file (YAML; JSON works too)::

    kind: firepath-switch-keys
    version: 1
    switch: tor-1-1
    switch_key: <64 hex>
    group_key: <64 hex>
    nd_key: <64 hex>

Key ids (key rollover, issue #21): a process holds a ``KeySet``, several such rings by **key id** (1..255,
a u8 in the signed header of every datagram; 0 is reserved, as RIFT reserves key id 0). It signs with its
``send_id`` and accepts a frame only under a key id of its ``accepted`` set; the old single-secret config
form is the set ``{1: ring}``. Rolling a secret without loss (as OSPF/IS-IS key chains, RIFT key ids and
TCP-AO do): (1) add the new key as accepted everywhere, (2) switch every node's send key to it, (3) retire
the old key; each step goes node by node, because during steps 1-2 every node accepts both keys.
``Codec.set_keys`` swaps a process's set at run time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import stat
import string
from enum import IntEnum
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("firepath.auth")
_WARNED: set[str] = set()        # key files warned about once per process (a reload reads them again)


def warn_key_files_here(paths: Any) -> None:
    """The caller prints `key_file_warning` for these files itself (with the config field): no log line."""
    _WARNED.update(str(p) for p in paths)


def key_file_warning(path: str | Path) -> str | None:
    """A warning when the key file at `path` is readable or writable by group or others (mode & 0o077), as
    ssh refuses such private keys: the fabric secret lets anyone holding it speak for every switch. None when
    it is private (or cannot be stat'ed: reading it reports that)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not mode & 0o077:
        return None
    return (f"WARNING: key file {path} is accessible by group/others (mode {mode:04o}); "
            f"it must be private: chmod 600 {path}")

__all__ = [
    "BUNDLE_KIND",
    "TCP_MD5_MAX_KEY",
    "MIN_SECRET_BYTES",
    "MAX_SECRET_FILE",
    "AuthError",
    "read_admin_token",
    "token_problem",
    "read_tcp_md5_key",
    "KeyKind",
    "KeyRing",
    "KeySet",
    "MissingKeyError",
    "ReplayWindow",
    "generate_secret",
    "write_secret_file",
]

MIN_SECRET_BYTES = 16
#: Largest key, bundle, token or password file read (bytes): each is well under 1 KB.
MAX_SECRET_FILE = 64 * 1024
MIN_KEY_ID, MAX_KEY_ID = 1, 255  # a u8 on the wire; 0 is reserved (never a valid key id)
LEGACY_KEY_ID = 1  # the key id of the single-secret config form (``security.key_file``)
KEY_BYTES = 32
BUNDLE_KIND = "firepath-switch-keys"
BUNDLE_VERSION = 1
_HEX = frozenset(string.hexdigits)


class KeyKind(IntEnum):
    """Which key signed a datagram (the ``key kind`` byte of the framing)."""

    SWITCH = 1
    MASTER = 2
    GROUP = 3
    ND = 4


class AuthError(ValueError):
    """A key file or key material is unusable; the message names the file and the problem."""


class MissingKeyError(AuthError):
    """The key ring does not hold the requested key (e.g. a switch bundle asked for another switch)."""


def _derive(secret: bytes, label: str) -> bytes:
    return hmac.new(secret, label.encode(), hashlib.sha256).digest()


def _parse_hex(text: object, what: str, source: str, exact: int | None = None) -> bytes:
    if not isinstance(text, str):
        raise AuthError(f"{source}: {what} must be a hex string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise AuthError(f"{source}: {what} is empty")
    bad = next((c for c in text if c not in _HEX), None)
    if bad is not None:
        raise AuthError(f"{source}: {what} is not hex (bad character {bad!r})")
    if len(text) % 2:
        raise AuthError(f"{source}: {what} has an odd number of hex digits ({len(text)})")
    value = bytes.fromhex(text)
    if exact is not None and len(value) != exact:
        raise AuthError(f"{source}: {what} must be {exact} bytes ({2 * exact} hex digits), got {len(value)}")
    if len(value) < MIN_SECRET_BYTES:
        raise AuthError(f"{source}: {what} too short: {len(value)} bytes, need >= {MIN_SECRET_BYTES}")
    return value


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 64 or not name.isprintable():
        raise AuthError(f"{what} must be 1..64 printable characters, got {name!r}")
    return name


class KeyRing:
    """Key material for one process: the full fabric secret (masters, tools) or a per-switch bundle."""

    __slots__ = ("_cache", "_fixed", "_secret", "restricted_to", "source")

    def __init__(self, *, secret: bytes | None = None, restricted_to: str | None = None,
                 fixed: dict[tuple[KeyKind, str], bytes] | None = None, source: str = "<memory>") -> None:
        """Use ``from_secret``, ``load`` or ``bundle_for_switch`` rather than this constructor."""
        if (secret is None) == (fixed is None):
            raise AuthError(f"{source}: a key ring holds either a secret or fixed bundle keys")
        self._secret = secret
        self._fixed = dict(fixed or {})
        self.restricted_to = restricted_to  # switch name for a bundle, None for the full ring
        self.source = source
        self._cache: dict[tuple[KeyKind, str], bytes] = {}

    def fingerprint(self) -> bytes:
        """SHA-256 over the key material (secret, or every fixed bundle key): equal rings sign alike. Never
        shown; used to tell a reloaded key file whose content changed under the same key id."""
        h = hashlib.sha256(b"secret:" + self._secret if self._secret is not None else b"bundle:")
        for (kind, owner), key in sorted(self._fixed.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
            h.update(b"%d:%s:" % (int(kind), owner.encode()) + key)
        return h.digest()

    # -- construction -------------------------------------------------------------------------------

    @classmethod
    def from_secret(cls, secret: bytes, source: str = "<memory>") -> KeyRing:
        if not isinstance(secret, bytes | bytearray):
            raise AuthError(f"{source}: secret must be bytes, got {type(secret).__name__}")
        if len(secret) < MIN_SECRET_BYTES:
            raise AuthError(f"{source}: secret too short: {len(secret)} bytes, need >= {MIN_SECRET_BYTES}")
        return cls(secret=bytes(secret), source=source)

    @classmethod
    def from_hex(cls, text: str, source: str = "<string>") -> KeyRing:
        return cls.from_secret(_parse_hex(text, "fabric secret", source), source)

    @classmethod
    def from_bundle(cls, switch: str, switch_key: bytes, group_key: bytes, nd_key: bytes,
                    source: str = "<memory>") -> KeyRing:
        _check_name(switch, f"{source}: switch")
        keys = {(KeyKind.SWITCH, switch): switch_key, (KeyKind.GROUP, ""): group_key, (KeyKind.ND, ""): nd_key}
        for (kind, _), key in keys.items():
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise AuthError(f"{source}: {kind.name.lower()} key must be {KEY_BYTES} bytes")
        return cls(fixed=keys, restricted_to=switch, source=source)

    @classmethod
    def load(cls, path: str | Path) -> KeyRing:
        """Load a fabric secret file (hex, whitespace ignored) or a per-switch bundle file (YAML/JSON).
        A file that group or others may read gets a warning (`key_file_warning`), as ssh does."""
        path = Path(path)
        source = str(path)
        try:
            text = read_secret_file(path).decode("utf-8")
        except FileNotFoundError:
            raise AuthError(f"{source}: key file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise AuthError(f"{source}: cannot read key file: {_why(e)}") from None
        warning = key_file_warning(path)
        if warning and source not in _WARNED:
            _WARNED.add(source)
            log.warning(warning)
        body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")).strip()
        if not body:
            raise AuthError(f"{source}: key file is empty")
        if ":" not in body:  # a bundle is a YAML/JSON mapping; anything else must be the hex secret
            return cls.from_hex("".join(body.split()), source)
        return cls._load_bundle(body, source)

    @classmethod
    def _load_bundle(cls, text: str, source: str) -> KeyRing:
        try:
            data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError as e:
            raise AuthError(f"{source}: neither a hex secret nor a valid key bundle: {e}") from None
        if not isinstance(data, dict) or data.get("kind") != BUNDLE_KIND:
            raise AuthError(f"{source}: neither a hex secret nor a key bundle (kind: {BUNDLE_KIND})")
        expected = {"kind", "version", "switch", "switch_key", "group_key", "nd_key"}
        unknown = sorted(str(k) for k in set(data) - expected)
        if unknown:
            raise AuthError(f"{source}: unknown key bundle field(s): {', '.join(unknown)}")
        missing = sorted(expected - set(data))
        if missing:
            raise AuthError(f"{source}: key bundle lacks field(s): {', '.join(missing)}")
        if data["version"] != BUNDLE_VERSION:
            raise AuthError(f"{source}: unsupported key bundle version {data['version']!r}")
        switch = _check_name(data["switch"], f"{source}: switch")
        keys = {f: _parse_hex(data[f], f, source, exact=KEY_BYTES) for f in ("switch_key", "group_key", "nd_key")}
        return cls.from_bundle(switch, keys["switch_key"], keys["group_key"], keys["nd_key"], source)

    def bundle_for_switch(self, name: str) -> KeyRing:
        """A restricted ring holding only ``name``'s switch key plus the group and ND keys."""
        return KeyRing.from_bundle(name, self.switch_key(name), self.group_key(), self.nd_key(),
                                   source=f"bundle for {name}")

    def dump_bundle(self) -> str:
        """YAML text of this ring as a per-switch bundle (only for restricted rings)."""
        if self.restricted_to is None:
            raise AuthError(f"{self.source}: dump_bundle needs a switch bundle; use bundle_for_switch(name)")
        return (
            f"# firepath key bundle for switch {self.restricted_to}: keep secret (mode 0600)\n"
            f"kind: {BUNDLE_KIND}\nversion: {BUNDLE_VERSION}\n"
            f"switch: {json.dumps(self.restricted_to)}\n"
            f"switch_key: {self.switch_key(self.restricted_to).hex()}\n"
            f"group_key: {self.group_key().hex()}\nnd_key: {self.nd_key().hex()}\n"
        )

    def save_bundle(self, path: str | Path) -> Path:
        """Write ``dump_bundle()`` to ``path`` with mode 0600."""
        return _write_private(Path(path), self.dump_bundle())

    # -- keys ---------------------------------------------------------------------------------------

    def key(self, kind: KeyKind, owner: str = "") -> bytes:
        """The key of ``kind`` (owner: switch name for SWITCH, master id for MASTER, "" otherwise)."""
        kind = KeyKind(kind)
        if kind in (KeyKind.GROUP, KeyKind.ND):
            owner = ""
        ident = (kind, owner)
        cached = self._cache.get(ident)
        if cached is not None:
            return cached
        if self._secret is None:
            try:
                return self._fixed[ident]
            except KeyError:
                what = f"{kind.name.lower()} key" + (f" of {owner!r}" if owner else "")
                raise MissingKeyError(
                    f"{self.source}: this key ring is restricted to switch {self.restricted_to!r} "
                    f"and has no {what}") from None
        if kind in (KeyKind.SWITCH, KeyKind.MASTER):
            _check_name(owner, f"{kind.name.lower()} key owner")
        label = {KeyKind.SWITCH: f"switch:{owner}", KeyKind.MASTER: f"master:{owner}",
                 KeyKind.GROUP: "group", KeyKind.ND: "nd"}[kind]
        key = _derive(self._secret, label)
        self._cache[ident] = key
        return key

    def has_key(self, kind: KeyKind, owner: str = "") -> bool:
        if self._secret is not None:
            return True
        if kind in (KeyKind.GROUP, KeyKind.ND):
            owner = ""
        return (kind, owner) in self._fixed

    def switch_key(self, name: str) -> bytes:
        return self.key(KeyKind.SWITCH, name)

    def master_key(self, id: str) -> bytes:  # noqa: A002 - name fixed by the contract
        return self.key(KeyKind.MASTER, id)

    def group_key(self) -> bytes:
        return self.key(KeyKind.GROUP)

    def nd_key(self) -> bytes:
        return self.key(KeyKind.ND)

    def __repr__(self) -> str:  # never show key material
        scope = "full" if self.restricted_to is None else f"switch {self.restricted_to!r}"
        return f"KeyRing({scope}, source={self.source!r})"


class KeySet:
    """The keys of one process by key id: ``rings[id]`` (a full ring or this switch's bundle, one per id),
    ``send_id`` the id it signs with, ``accepted`` the ids whose frames it verifies (every id in ``rings``).

    ``retired``: ids the config still lists but no longer accepts (their frames are rejected like unknown
    ids; kept only so that messages can say "retired"). Immutable: ``Codec.set_keys`` swaps whole sets.
    Raises ``AuthError`` for an id out of 1..255, a send id it does not hold, or rings restricted to
    different switches.
    """

    __slots__ = ("accepted", "restricted_to", "retired", "rings", "send_id", "source")

    def __init__(self, rings: dict[int, KeyRing], send_id: int, *, retired: frozenset[int] = frozenset(),
                 source: str = "<memory>") -> None:
        if not rings:
            raise AuthError(f"{source}: a key set needs at least one key")
        for key_id, ring in rings.items():
            _check_key_id(key_id, f"{source}: key id")
            if not isinstance(ring, KeyRing):
                raise AuthError(f"{source}: key {key_id} is not a KeyRing ({type(ring).__name__})")
        for key_id in retired:
            _check_key_id(key_id, f"{source}: retired key id")
        _check_key_id(send_id, f"{source}: send key id")
        if send_id not in rings:
            raise AuthError(f"{source}: send key {send_id} is not among the accepted keys "
                            f"{sorted(rings)}")
        scopes = {ring.restricted_to for ring in rings.values()}
        if len(scopes) > 1:
            what = sorted("a fabric secret" if s is None else f"a bundle of {s}" for s in scopes)
            raise AuthError(f"{source}: keys of different scopes ({', '.join(what)}): a node holds either "
                            f"fabric secrets or its own switch bundles")
        self.rings = dict(sorted(rings.items()))
        self.send_id = send_id
        self.accepted = frozenset(rings)
        self.retired = frozenset(retired) - self.accepted
        self.restricted_to = scopes.pop()
        self.source = source

    def check_usable_by(self, local_id: str, master: bool) -> None:
        """AuthError naming where the keys come from unless node `local_id` can sign and verify with them: a
        master needs fabric secrets, a switch its own bundles (or the secrets)."""
        if self.restricted_to is None or (not master and self.restricted_to == local_id):
            return
        need = " (a master needs the fabric secret)" if master else ""
        raise AuthError(f"{self.source}: the key bundle of switch {self.restricted_to!r} cannot be used by "
                        f"{local_id!r}{need}")

    @classmethod
    def single(cls, ring: KeyRing, key_id: int = LEGACY_KEY_ID) -> KeySet:
        """A set of one key (the single-secret form): signs and accepts only ``key_id``."""
        return cls({key_id: ring}, key_id, source=ring.source)

    @classmethod
    def of(cls, keys: KeyRing | KeySet) -> KeySet:
        return keys if isinstance(keys, KeySet) else cls.single(keys)

    @classmethod
    def load(cls, files: dict[int, str | Path], send_id: int, *, retired: frozenset[int] = frozenset(),
             where: dict[int, str] | None = None, source: str = "<memory>") -> KeySet:
        """Load each accepted key file (``KeyRing.load``: a secret or a switch bundle). ``where[id]`` prefixes
        that key's errors (the config's ``file:line: field``), so a bad file names the config entry too."""
        rings = {}
        for key_id, path in files.items():
            try:
                rings[key_id] = KeyRing.load(path)
            except AuthError as e:
                prefix = (where or {}).get(key_id)
                raise AuthError(f"{prefix}: {e}" if prefix else str(e)) from None
        return cls(rings, send_id, retired=retired, source=source)

    @classmethod
    def from_security(cls, security: Any) -> KeySet:
        """The set a ``proto.config.Security`` section names (``keys``/``send_key``/``accept``; the old
        ``key_file`` form is key id 1). Files of retired keys (listed, not accepted) are not read."""
        refs = security.key_refs()
        accept = set(security.accepted_ids())
        files = {r.id: r.file for r in refs if r.id in accept}
        where = {r.id: r.where for r in refs}
        return cls.load(files, security.send_key, retired=frozenset(r.id for r in refs) - accept, where=where,
                        source=where.get(security.send_key, str(security.key_file)))

    def ring(self, key_id: int) -> KeyRing:
        """The ring of an accepted key id; MissingKeyError otherwise."""
        try:
            return self.rings[key_id]
        except KeyError:
            raise MissingKeyError(f"{self.source}: no accepted key with id {key_id}") from None

    @property
    def send_ring(self) -> KeyRing:
        return self.rings[self.send_id]

    def bundle_for_switch(self, name: str) -> KeySet:
        """The same ids, each restricted to ``name`` (``KeyRing.bundle_for_switch``)."""
        return KeySet({i: r.bundle_for_switch(name) for i, r in self.rings.items()}, self.send_id,
                      retired=self.retired, source=f"bundles for {name}")

    def same_as(self, other: KeySet) -> bool:
        """The same ids in the same roles and the same key material under every id (a key file rewritten
        under an unchanged id differs)."""
        return (self.send_id == other.send_id and self.retired == other.retired
                and self.rings.keys() == other.rings.keys()
                and all(r.fingerprint() == other.rings[i].fingerprint() for i, r in self.rings.items()))

    def status(self) -> dict[str, Any]:
        """What REST/metrics show: ids only, never key material."""
        return {"send_key": self.send_id, "accepted": sorted(self.accepted), "retired": sorted(self.retired)}

    def __repr__(self) -> str:
        return (f"KeySet(send={self.send_id}, accepted={sorted(self.accepted)}, retired={sorted(self.retired)}, "
                f"source={self.source!r})")


def _check_key_id(key_id: object, what: str) -> int:
    if type(key_id) is not int or not MIN_KEY_ID <= key_id <= MAX_KEY_ID:
        raise AuthError(f"{what} {key_id!r} out of range {MIN_KEY_ID}..{MAX_KEY_ID}")
    return key_id


def generate_secret(n_bytes: int = 32) -> bytes:
    return secrets.token_bytes(n_bytes)


def _write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    return path


def write_secret_file(path: str | Path, secret: bytes | None = None) -> Path:
    """Write a (new random) fabric secret as hex with mode 0600 (for ``firepath config keygen``)."""
    secret = generate_secret() if secret is None else secret
    KeyRing.from_secret(secret)  # validates the length
    return _write_private(Path(path), secret.hex() + "\n")


class ReplayWindow:
    """Anti-replay sliding window for one sender (RFC 4303 style, ``size`` sequence numbers wide).

    ``check(seq)`` says whether ``seq`` is acceptable without changing anything; call ``accept(seq)``
    only after the datagram was authenticated, so forged datagrams cannot move the window.
    """

    __slots__ = ("_bitmap", "size", "top")

    def __init__(self, size: int = 64) -> None:
        if type(size) is not int or size < 1:
            raise ValueError(f"replay window size must be an int >= 1, got {size!r}")
        self.size = size
        self.top: int | None = None  # highest accepted sequence number
        self._bitmap = 0  # bit k set = top - k was accepted

    def start_after(self, seq: int) -> None:
        """Restart the window so that ``seq`` and everything below it count as already seen."""
        self.top, self._bitmap = seq, (1 << self.size) - 1

    def check(self, seq: int) -> bool:
        if self.top is None or seq > self.top:
            return True
        offset = self.top - seq
        return offset < self.size and not (self._bitmap >> offset) & 1

    def accept(self, seq: int) -> bool:
        """Record ``seq``; returns False (window unchanged) if it is a duplicate or too old."""
        if not self.check(seq):
            return False
        if self.top is None:
            self.top, self._bitmap = seq, 1
        elif seq > self.top:
            shift = seq - self.top
            self._bitmap = ((self._bitmap << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.top = seq
        else:
            self._bitmap |= 1 << (self.top - seq)
        return True


def read_secret_file(path: str | Path) -> bytes:
    """The bytes of a small node-local file (key, bundle, token, TCP MD5 key, master state). OSError unless it is a
    regular file of at most MAX_SECRET_FILE bytes: opened without blocking and checked before a byte is read,
    so a FIFO named by mistake (or malice) cannot hang a start or a reload, nor /dev/zero fill the memory."""
    if "\0" in str(path):
        raise OSError(f"path {str(path)!r} contains a NUL character")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(MAX_SECRET_FILE + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_SECRET_FILE:
        raise OSError(f"over {MAX_SECRET_FILE} bytes, too large for what it should hold")
    return raw


def _why(e: Exception) -> str:
    """An OSError's reason without its repetition of the path (the callers name the file)."""
    return (e.strerror if isinstance(e, OSError) and e.strerror else None) or str(e)


def read_admin_token(path: Path, where: str) -> str:
    """The admin (drain) token in `path` (`security.admin_token_file`), stripped. AuthError naming `where`
    (the config's ``file:line: security.admin_token_file``), the file and the problem: not found, unreadable,
    empty."""
    try:
        text = read_secret_file(path).decode("utf-8")
    except FileNotFoundError:
        raise AuthError(f"{where}: {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AuthError(f"{where}: {path}: cannot read: {_why(e)}") from None
    if not text.strip():
        raise AuthError(f"{where}: {path}: the token file is empty")
    problem = token_problem(text.strip())
    if problem:
        raise AuthError(f"{where}: {path}: {problem}")
    return text.strip()


def configured_admin_token(security: Any) -> str | None:
    """The admin token a config's `security` section names (`admin_token_file`, read by `read_admin_token`),
    None if it names none. AuthError as `read_admin_token`."""
    if security.admin_token_file is None:
        return None
    return read_admin_token(security.admin_token_file, security.admin_token_where)


def token_problem(token: str) -> str | None:
    """Why `token` cannot be an admin token (None if it can): it travels in an HTTP header, `Authorization:
    Bearer <token>`, so it is one line of printable ASCII (a newline, a tab, a control or non-ASCII character
    could not be sent, or would arrive changed)."""
    bad = next((c for c in token if not " " <= c <= "~"), None)
    if bad is None:
        return None
    return f"the token must be one line of printable ASCII (an HTTP header carries it), found {bad!r}"


#: Linux TCP MD5 (RFC 2385) keys are at most TCP_MD5SIG_MAXKEYLEN bytes.
TCP_MD5_MAX_KEY = 80


def read_tcp_md5_key(path: Path) -> str:
    """An eBGP peer's TCP MD5 key (`bgp.peers[*].password_file`): one line (a trailing newline allowed) of
    1..80 printable ASCII characters without quotes or backslashes (it goes into ExaBGP's configuration),
    in a file only its owner may read or write. AuthError names the problem (the caller adds where)."""
    try:
        raw = read_secret_file(path)
        st = path.stat()
    except OSError as e:
        raise AuthError(f"cannot read: {_why(e)}") from None
    if st.st_mode & 0o077:
        raise AuthError(f"mode {st.st_mode & 0o777:o} lets others read or change the key; chmod 600 it")
    text = raw[:-1] if raw.endswith(b"\n") else raw
    if not text:
        raise AuthError("empty")
    if len(text) > TCP_MD5_MAX_KEY:
        raise AuthError(f"{len(text)} bytes, TCP MD5 keys have at most {TCP_MD5_MAX_KEY}")
    if any(c < 0x20 or c > 0x7E or c in b'"\\' for c in text):
        raise AuthError("one line of printable ASCII without quotes or backslashes expected")
    return text.decode()


def unexpected_body(method: str, path: str, raw: bytes) -> str | None:
    """Why `raw` is not an acceptable body for an admin action that takes none (the master's rollout
    commit/abort and reload, the switch client's reload) — only nothing, whitespace or an empty JSON
    object `{}` is — or None. The message names the endpoint, the body (clipped) and says nothing was done:
    a body there used to be ignored, so garbage or a parameter the action does not have
    (`POST /v1/reload {"config": "other.yaml"}`) still ran it and answered 200."""
    text = raw.strip()
    if not text:
        return None
    try:
        if json.loads(text) == {}:
            return None
    except (ValueError, RecursionError):
        pass
    shown = text[:40].decode("utf-8", "replace")
    return (f"{method} {path} takes no request body (send none, or {{}}); got {len(raw)} bytes "
            f"({shown!r}{'...' if len(text) > 40 else ''}): nothing done")


def bearer_denial(header: str | None, token: str | None,
                  disabled: str = "no security.admin_token_file in the config") -> tuple[int, str] | None:
    """Why a request's `Authorization` header does not grant the admin `token` — (401 or 403, message) — or
    None when it does; the one check of the master's and the switch client's REST APIs. 401 without the
    header or with one that is not `Bearer <token>`, a token that is not printable ASCII included (a token
    never is, `token_problem`; aiohttp hands such bytes over as surrogates, which str.encode() refused with
    a UnicodeEncodeError: a 500 and a traceback); 403 with `disabled` when there is no token to match, or
    for a wrong one (compared in constant time)."""
    if header is None:
        return 401, "missing Authorization: Bearer <token>"
    scheme, _, presented = header.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented or token_problem(presented) is not None:
        return 401, "malformed Authorization header (expected 'Bearer <token>', the token printable ASCII)"
    if token is None:
        return 403, disabled
    if not hmac.compare_digest(presented.encode("ascii"), token.encode("ascii")):
        return 403, "invalid token"
    return None
