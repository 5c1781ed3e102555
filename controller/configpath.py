"""Which file a `POST /v1/rollout/prepare {"config": PATH}` may make a master read (controller.rollout_rest).

The admin token lets a drain operator prepare a rollout; it must not let them read the master's files (the
fabric secret forges any switch; /etc/shadow). The rule:

- PATH resolved (relative to the config directory, symlinks followed) must lie in the **config directory**
  (the resolved directory of the config file the replica was started with) or below it: put next.yaml
  beside fabric.yaml, or in a subdirectory (a Kubernetes ConfigMap's `..data/` links resolve there too);
- it must be a regular file (a FIFO or device would hold the reading thread);
- it must not be one of the running config's secret files — its key files, admin token file, eBGP
  password files — by resolved path or by inode (a hard link), whatever its name.

A refusal is a ConfigError naming PATH and the rule, never the file's content. What a file that is not a
fabric config reads as is the config parser's business: it never quotes such a file (proto.configparse).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from proto.config import ConfigError, Fabric

__all__ = ["config_dir", "confine", "secret_files"]


def config_dir(source: str | Path) -> Path:
    """The resolved directory of the config file `source` (the root PATH is confined to)."""
    return Path(os.path.realpath(os.path.dirname(os.path.abspath(source))))


def secret_files(fabric: Fabric) -> list[Path]:
    """The node-local secret files `fabric` names: key files, admin token file, eBGP password files."""
    sec = fabric.security
    out = [ref.file for ref in sec.key_refs()]
    if sec.admin_token_file is not None:
        out.append(sec.admin_token_file)
    for sw in fabric.switches:
        if sw.bgp is not None:
            out += [p.password_file for p in sw.bgp.peers if p.password_file is not None]
    return out


def confine(requested: str, root: Path, running: Iterable[Fabric]) -> str:
    """The path to read for a prepare of `requested` (resolved), or ConfigError(requested, ...) saying which
    rule it breaks (module docstring). `running`: the configs whose secret files are refused."""
    def refuse(why: str) -> ConfigError:
        return ConfigError(requested, None, "", f"refused: {why} (nothing read, nothing changed)")

    if "\0" in requested:
        raise refuse("the path contains a NUL character")
    if not requested:
        raise refuse("empty path")
    real = os.path.realpath(os.path.join(root, requested))   # an absolute `requested` replaces root
    if os.path.commonpath([str(root), real]) != str(root):
        raise refuse(f"a prepare reads only files in the config directory {root} or below it (resolved, "
                     f"symlinks followed; this one is {real})")
    try:
        st = os.stat(real)
    except OSError as e:
        raise ConfigError(requested, None, "", f"cannot read config: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise refuse("not a regular file")
    for fabric in running:
        for secret in secret_files(fabric):
            try:
                same = os.path.realpath(secret) == real or os.path.samestat(os.stat(secret), st)
            except OSError:
                same = False
            if same:
                raise refuse("a secret file of the running config (key, admin token or eBGP password file), "
                             "not a fabric config")
    return real
