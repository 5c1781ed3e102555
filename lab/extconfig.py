"""The fabric config for a lab whose masters run outside it (`firepath lab config`, lab/external.py): its own
module because it builds on lab.fabric, which itself uses lab.external (no import cycle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lab.fabric import ADMIN_TOKEN, generate_config


def write_config(out_dir: Path, name: str, *, key_owner: int | None = None, token_group: int | None = None,
                 **clos: Any) -> Path:
    """A lab-ready fabric config for external masters: ``out_dir/fabric.yaml`` (lab ports and timers, the
    Clos parameters given, e.g. master_address="127.0.0.11,127.0.0.12,127.0.0.13"), a fresh
    ``out_dir/fabric.key`` and a fresh ``out_dir/admin.token`` (`security.admin_token_file`, the drain and
    rollout token; docker/compose.yaml mounts it), both mode 0400, owned by `key_owner` when given: the uid the
    masters run as, 10001 in the image; changing the owner needs root. `token_group` (a gid): the token is
    also readable by that group (mode 0440), so an operator who is not root can send drains and rollouts with
    it (the masters' uid alone could not read it). Returns the config path; ValueError on bad parameters or an
    existing ``fabric.key`` (never overwritten), before anything is written. The token is what lets an operator
    drain, roll out and reload the containerised cluster (docker/compose.yaml mounts it)."""
    if key_owner is not None and key_owner != os.geteuid() and os.geteuid() != 0:
        raise ValueError(f"giving {out_dir / 'fabric.key'} to uid {key_owner} needs root: run it with sudo, "
                         f"or pass --key-owner {os.geteuid()} and chown it later")
    if token_group is not None and os.geteuid() != 0 and token_group not in os.getgroups():
        raise ValueError(f"giving {out_dir / ADMIN_TOKEN} to group {token_group} needs root or membership of it")
    key = out_dir / "fabric.key"
    if key.exists() or key.is_symlink():      # as `config keygen`: a secret is never overwritten
        raise ValueError(f"{key} already exists; not overwriting it (masters started with it would no longer "
                         f"authenticate a switch given the new one): remove it first for a new secret, or write "
                         f"elsewhere (-o)")
    token = out_dir / ADMIN_TOKEN
    if token.is_dir() and not token.is_symlink():
        raise ValueError(f"{token} is a directory (docker-compose makes one for a bind mount whose file is "
                         f"missing): remove it, then write the config again")
    if token.exists() or token.is_symlink():        # an old token (mode 0400) goes with the old secret
        token.unlink()
    path = generate_config(out_dir, name, admin_token=True, **clos)
    for secret in (key, out_dir / ADMIN_TOKEN):
        os.chmod(secret, 0o400)
        if key_owner is not None:
            os.chown(secret, key_owner, -1)
    if token_group is not None:
        os.chown(out_dir / ADMIN_TOKEN, -1, token_group)
        os.chmod(out_dir / ADMIN_TOKEN, 0o440)
    return path
