"""The fabric config for a lab whose masters run outside it (`firepath lab config`, lab/external.py): its own
module because it builds on lab.fabric, which itself uses lab.external (no import cycle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lab.fabric import generate_config


def write_config(out_dir: Path, name: str, *, key_owner: int | None = None, **clos: Any) -> Path:
    """A lab-ready fabric config for external masters: ``out_dir/fabric.yaml`` (lab ports and timers, the
    Clos parameters given, e.g. master_address="127.0.0.11,127.0.0.12,127.0.0.13") and a fresh
    ``out_dir/fabric.key`` (mode 0400, owned by `key_owner` when given: the uid the masters run as, 10001 in
    the image; changing the owner needs root). Returns the config path; ValueError on bad parameters or an
    existing ``fabric.key`` (never overwritten), before anything is written."""
    if key_owner is not None and key_owner != os.geteuid() and os.geteuid() != 0:
        raise ValueError(f"giving {out_dir / 'fabric.key'} to uid {key_owner} needs root: run it with sudo, "
                         f"or pass --key-owner {os.geteuid()} and chown it later")
    key = out_dir / "fabric.key"
    if key.exists() or key.is_symlink():      # as `config keygen`: a secret is never overwritten
        raise ValueError(f"{key} already exists; not overwriting it (masters started with it would no longer "
                         f"authenticate a switch given the new one): remove it first for a new secret, or write "
                         f"elsewhere (-o)")
    # no admin token: the compose file mounts only fabric.yaml and fabric.key into the containers
    path = generate_config(out_dir, name, admin_token=False, **clos)
    os.chmod(key, 0o400)
    if key_owner is not None:
        os.chown(key, key_owner, -1)
    return path
