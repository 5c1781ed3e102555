"""Key rollover steps (issue #21): the ``security:`` section of each step, and rewriting it in a config file.

Rolling the fabric secret from key id A to a new key id B without loss, one node at a time per step
(ARCHITECTURE.md "Key rollover"):

1. every node accepts A and B, signs with A;
2. every node signs with B (a node still on step 1 accepts B, so nothing is lost);
3. every node drops A (no node signs with A any more); a frame under A is then rejected as
   ``unknown_key_id``.

Pure text work: ``security_yaml`` renders a section, ``replace_security`` swaps the section of a config's
text (the rest of the file, comments included, is kept byte for byte). Used by ``firepath config keygen``.
``reload_keys`` is what a runtime reload (SIGHUP) calls to apply a config file's key set to a live Codec;
``keys_for_reload`` is the rule every reload follows: only a reload of the running config changes keys.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from proto.auth import MAX_KEY_ID, MIN_KEY_ID, KeySet
from proto.config import ConfigError, Fabric, Security, line_of

__all__ = ["keys_for_reload", "next_key_id", "reload_keys", "replace_security", "rollover_steps", "security_yaml"]


def next_key_id(ids: Sequence[int]) -> int:
    """One above the highest id in use, wrapping to the lowest free id after 255; ValueError if all 255
    ids are in use."""
    top = max(ids, default=0)
    if top < MAX_KEY_ID:
        return top + 1
    free = sorted(set(range(MIN_KEY_ID, MAX_KEY_ID + 1)) - set(ids))
    if not free:
        raise ValueError(f"every key id {MIN_KEY_ID}..{MAX_KEY_ID} is in use: retire one first")
    return free[0]


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def security_yaml(keys: Sequence[tuple[int, str]], send: int, accept: Sequence[int] | None = None,
                  admin_token_file: str | None = None) -> str:
    """A block-style ``security:`` section (ends with a newline)."""
    lines = ["security:", "  keys:"]
    lines += [f"    - {{id: {i}, file: {_quote(f)}}}" for i, f in keys]
    lines.append(f"  send_key: {send}")
    if accept is not None:
        lines.append(f"  accept: [{', '.join(map(str, accept))}]")
    if admin_token_file is not None:
        lines.append(f"  admin_token_file: {_quote(admin_token_file)}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return yaml.safe_dump(text, default_style='"', width=10_000).strip()


def rollover_steps(security: Security, base_dir: Path, new_id: int, new_file: Path) -> list[tuple[str, str]]:
    """(title, security section) for the three steps, from the current section to a new key ``new_id``
    read from ``new_file`` (paths written relative to ``base_dir``, the config's directory)."""
    refs = [r for r in security.key_refs() if r.id in security.accepted_ids()]
    if any(r.id == new_id for r in security.key_refs()):
        raise ValueError(f"key id {new_id} is already in security.keys")
    old = security.send_key
    token = None if security.admin_token_file is None else _rel(security.admin_token_file, base_dir)
    current = [(r.id, _rel(r.file, base_dir)) for r in refs]
    new = (new_id, _rel(new_file, base_dir))
    others = [(i, f) for i, f in current if i != old]
    return [
        (f"step 1, on every node one at a time: accept key {new_id}, keep signing with key {old}",
         security_yaml([*current, new], old, admin_token_file=token)),
        (f"step 2, once every node runs step 1: sign with key {new_id}",
         security_yaml([*current, new], new_id, admin_token_file=token)),
        (f"step 3, once every node runs step 2: retire key {old} (its frames are then rejected)",
         security_yaml([*others, new], new_id, admin_token_file=token)),
    ]


def replace_security(text: str, block: str, source: str = "<config>") -> str:
    """``text`` with its top-level ``security:`` entry replaced by ``block`` (a rendered section).

    ConfigError if the text has no top-level mapping with a ``security`` key."""
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise ConfigError(source, None, "", f"YAML error: {e}") from None
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(source, 1, "", "expected a fabric mapping")
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "security":
            if key.start_mark.column != 0:
                raise ConfigError(source, key.start_mark.line + 1, "security", "rewrite needs block style "
                                                                               "(`security:` at column 0)")
            lines = text.splitlines(keepends=True)
            first = key.start_mark.line
            end = value.end_mark.line + (1 if value.end_mark.column > 0 else 0)
            # a block mapping ends at the start of the next key's line: keep trailing comments outside it
            return "".join(lines[:first]) + block + "".join(lines[end:])
    raise ConfigError(source, 1, "security", "missing required field")


def reload_keys(codec: Any, path: str | Path) -> KeySet:
    """Read the config at ``path``, load its key set and swap it into ``codec`` (``Codec.set_keys``); returns
    the new set. Only the ``security:`` section is applied. Raises ConfigError (file:line:field), AuthError
    (a key file, prefixed with its config entry) or ValueError (a set for another switch): then nothing
    changed."""
    from proto.config import load_fabric

    keys = KeySet.from_security(load_fabric(path).security)
    codec.set_keys(keys)
    return keys


def keys_for_reload(held: KeySet, nxt: Fabric, running_digest: str,
                    running_file: str | Path | None = None) -> KeySet | None:
    """The key set a node holding `held` swaps in when it reloads the config `nxt` (issue #21); None: keep
    `held` (the file names the same set).

    Keys change only with a reload of the running config (`nxt.digest == running_digest`: a key-only change,
    one step of the key rollover) from the running config's own file (`running_file`, when given: a copy
    elsewhere reads its key files from its own directory, i.e. other keys, and a rollout of it reports
    "unchanged" — tester: every switch cut off). A reload of another config (a master preparing a rollout, a
    client moving to the next config) must name the set held now: the nodes still on the running config
    sign and verify with it until they move, so a master swapping keys at prepare would cut every switch
    off (and an abort would not bring the old set back). Such a file is refused: ConfigError naming
    `security` (file:line), nothing changes. Reading the file's key files may raise AuthError (named)."""
    keys = KeySet.from_security(nxt.security)
    if keys.same_as(held):
        return None
    now, there = describe_keys(held.status()), describe_keys(keys.status())
    what = (f"the same key ids ({now}) with other key material" if now == there
            else f"{there} here, {now} held now")
    if nxt.digest == running_digest:
        if running_file is None or Path(nxt.source).resolve() == Path(running_file).resolve():
            return keys
        files = ", ".join(dict.fromkeys(str(r.file) for r in nxt.security.key_refs()))
        raise ConfigError(nxt.source, line_of(nxt.source, "security"), "security",
                          f"the running config from another file than {running_file}, naming another key set "
                          f"({what}; its key files, read from its own directory: {files}): keys change only by "
                          f"reloading the running config's own file (SIGHUP, POST /v1/reload, `firepath lab "
                          f"reload all`), never by a rollout")
    raise ConfigError(nxt.source, line_of(nxt.source, "security"), "security",
                      f"another config (digest {nxt.digest[:12]}...) naming another key set ({what}): a rollout "
                      f"does not change keys, the switches still on the running config sign and verify with the "
                      f"set held now. Give this file that set; change keys separately, by reloading the running "
                      f"config (README, key rollover)")


def describe_keys(status: dict[str, Any]) -> str:
    """KeySet.status() for a person: "send key 2, accepted 1,2, retired 3"."""
    out = f"send key {status['send_key']}, accepted {','.join(map(str, status['accepted']))}"
    return out + (f", retired {','.join(map(str, status['retired']))}" if status["retired"] else "")
