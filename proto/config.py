"""The cluster config: one YAML file describing the whole fabric, loaded into an immutable `Fabric`.

Every switch and master loads the same file. Two things in it are shared protocol state:

* the **link index** -- the order of `links:` in the file -- is the order of the link-state database (LSD);
* the **digest** -- sha256 over a canonical serialization of the normalized model -- is what masters and
  clients compare to be sure they route over the same fabric. It ignores key order, comments, whitespace,
  flow/block style and defaults written out or left implicit. Local file paths (`security:`) are not part
  of it: machines may keep their key files in different places. Nor are the timers the software derives
  for a big fabric (`Fabric.timers`, proto.budget): it covers the file's (`Fabric.config_timers`), so the
  same file has the same digest across firepath versions.

The loader parses with `yaml.compose` (libyaml) so every node keeps its line, and converts the node tree
itself: every error is a `ConfigError` naming the file, the YAML line and the field.
"""


from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import yaml

from proto import fabricmodel
from proto.configparse import FabricParser
from proto.fabricmodel import *  # noqa: F403 - the model (proto.fabricmodel) is this module's public API too
from proto.fabricmodel import ConfigError, Fabric

_MERGE = "tag:yaml.org,2002:merge"

__all__ = [*fabricmodel.__all__, "MAX_CONFIG_BYTES", "line_of", "load_fabric", "parse_fabric", "parse_file_text",  # noqa: PLE0604
           "read_config_text"]  # noqa: PLE0604


MAX_CONFIG_BYTES = 32 * 1024 * 1024
"""Largest config file accepted (bytes). The Jupiter preset is ~9 MB; parsing costs ~50x the file in
memory (the YAML node tree), so the cap bounds a loader's memory to a few GB before it reads a byte."""


def load_fabric(path: str | Path) -> Fabric:
    """Load and validate the config file at `path`; relative paths in it resolve against its directory.

    Raises ConfigError for an unreadable file, one larger than MAX_CONFIG_BYTES, or any invalid content.
    """
    return parse_file_text(path, read_config_text(path))


def parse_file_text(path: str | Path, text: str) -> Fabric:
    """`text`, read from the config file at `path` (read_config_text), as load_fabric parses it."""
    return parse_fabric(text, source=str(path), base_dir=Path(path).resolve().parent)


def read_config_text(path: str | Path) -> str:
    """The text of the config file at `path`, as load_fabric reads it (a replica keeps the text of the config
    it runs: controller.durable.RolloutStore). ConfigError naming the file if it cannot be read."""
    source = str(path)
    try:
        if "\0" in source:
            raise OSError(f"the path contains a NUL character: {source!r}")
        # Opened without blocking: a FIFO nobody writes must not hang a master's REST (rollout prepare);
        # then read blocking, so a pipe that is written (`config check <(...)`) is read to its end.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        os.set_blocking(fd, True)
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(
                    source, None, "", f"config is {size:,} bytes, over the limit of {MAX_CONFIG_BYTES:,}"
                )
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:  # grew while read, or not a regular file
            raise ConfigError(source, None, "", f"config is over the limit of {MAX_CONFIG_BYTES:,} bytes")
        if not raw and not stat.S_ISREG(st.st_mode):   # tester: a FIFO nobody writes read as "empty document"
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) else "not a file"
            raise ConfigError(source, None, "", f"cannot read config: {kind} that gave no data, not a regular file")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:         # the path is named once, by the error's file
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(source, None, "", f"cannot read config: {why}") from None
    return text


def parse_fabric(text: str, source: str = "<string>", base_dir: Path | None = None) -> Fabric:
    """Parse and validate config text; `base_dir` (default: the current directory) anchors relative paths.

    Raises ConfigError for text over MAX_CONFIG_BYTES (UTF-8) or any invalid content.
    """
    if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ConfigError(source, None, "", f"config is over the limit of {MAX_CONFIG_BYTES:,} bytes")
    return FabricParser(source, base_dir if base_dir is not None else Path.cwd()).parse(text)




def _mapping_value(node: yaml.MappingNode, key: str, seen: set[int] | None = None) -> yaml.Node | None:
    """`key`'s value in a mapping: its own, else from its merge key's sources in order (as the loader reads
    it); each mapping looked in once (`seen`: an alias merged many times, a cycle)."""
    seen = set() if seen is None else seen
    seen.add(id(node))
    own = next((v for k, v in node.value if k.tag != _MERGE and isinstance(k, yaml.ScalarNode) and k.value == key), None)
    if own is not None:
        return own
    for k, v in node.value:
        if k.tag == _MERGE:
            for src in v.value if isinstance(v, yaml.SequenceNode) else [v]:
                if isinstance(src, yaml.MappingNode) and id(src) not in seen:
                    found = _mapping_value(src, key, seen)
                    if found is not None:
                        return found
    return None


def line_of(path: str | Path, field: str) -> int | None:
    """The YAML line (1-based) of `field` in the config file at `path`: a dotted path with list indexes as
    the errors name fields (`masters[2].rest_port`, `security`). None when the file cannot be read or parsed,
    or has no such field: best effort, for errors found after loading (e.g. comparing two configs)."""
    steps = [int(s) if s.isdigit() else s for s in re.findall(r"[^.\[\]]+", field)]
    try:
        # a regular file only, opened without blocking: a FIFO put there since must not hang a master's REST
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
        with open(fd, encoding="utf-8") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            node = yaml.compose(f.read(MAX_CONFIG_BYTES + 1), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, ValueError, yaml.YAMLError):      # ValueError: UnicodeDecodeError, a NUL in the path
        return None
    for step in steps:
        if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
        elif isinstance(node, yaml.MappingNode):
            node = _mapping_value(node, str(step))
        else:
            node = None
        if node is None:
            return None
    return None if node is None else node.start_mark.line + 1
