"""Imports that never finished: a version folder with a reservation (and perhaps encrypted files) but
no manifest, left by a process killed mid-import (a quantization job's worker, an ``ovbatch models
import`` interrupted by the OOM killer).

Such a version is never visible (the manifest is written last), but it keeps its number and its
files. The reservation records its owner (host, pid and the process's start time, so a reused pid
is not mistaken for it) and when it was made. An owner on this host that no longer runs is dead for
sure, and its leftovers are removed by the next import of that name on this host (a quantization job
rerun by the same worker) and by ``ovbatch models clean``; an owner on another host cannot be asked,
so its leftovers go only once older than ``--older-than`` (default 24 h: no import takes that long).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ovbatch.registry import refs
from ovbatch.storage import ObjectStore


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def reservation_body() -> bytes:
    """Who reserves the version, and when."""
    pid = os.getpid()
    return json.dumps(
        {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid), "at": time.time()}
    ).encode()


@dataclass(frozen=True)
class Unfinished:
    name: str
    version: str
    keys: list[str]  # every object under the version's folder
    owner: dict[str, Any]  # the reservation's record ({} when it has none: written before ovbatch recorded it)
    state: str  # "running" (its owner runs on this host), "dead" (it does not), "unknown" (another host)

    @property
    def age_s(self) -> float | None:
        at = self.owner.get("at")
        return time.time() - float(at) if isinstance(at, int | float) else None

    def describe(self) -> str:
        age = self.age_s
        when = f"{age / 3600:.1f} h ago" if age is not None else "at an unknown time"
        who = f"pid {self.owner.get('pid')} on {self.owner.get('host')}" if self.owner else "an unknown process"
        return f"{self.name}@{self.version}: import by {who} started {when}, {self.state}; {len(self.keys)} object(s)"

    def removable(self, older_than_s: float) -> bool:
        if self.state == "running":
            return False
        if self.state == "dead":
            return True
        age = self.age_s
        return age is not None and age >= older_than_s or (age is None and older_than_s <= 0)


def state_of(owner: dict[str, Any]) -> str:
    if not owner or owner.get("host") != socket.gethostname():
        return "unknown"
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return "unknown"
    start = _start_ticks(pid)
    return "running" if start is not None and start == owner.get("start") else "dead"


def find(store: ObjectStore, name: str | None = None, listed: Iterable[str] | None = None) -> list[Unfinished]:
    """Version folders without a manifest (under ``name`` only, if given); ``listed``: the keys under
    that prefix, where the caller has listed them already."""
    prefix = f"{refs.ROOT}/{refs.check_name(name)}/" if name else f"{refs.ROOT}/"
    folders: dict[tuple[str, str], list[str]] = {}
    for key in store.list(prefix) if listed is None else listed:
        parts = key.split("/")
        if len(parts) == 4:
            folders.setdefault((parts[1], parts[2]), []).append(key)
    found = []
    for (model, version), keys in sorted(folders.items()):
        if any(k.endswith("/manifest.json") for k in keys):
            continue
        owner: dict[str, Any] = {}
        reservation = refs.reservation_key(model, version)
        if reservation in keys:
            try:
                data = json.loads(store.get_bytes(reservation) or b"{}")
                owner = data if isinstance(data, dict) else {}
            except ValueError:
                owner = {}
        found.append(Unfinished(model, version, keys, owner, state_of(owner)))
    return found


def remove(store: ObjectStore, item: Unfinished) -> None:
    """The files first, the reservation last: a second cleaner finds what is left and finishes it."""
    reservation = refs.reservation_key(item.name, item.version)
    for key in item.keys:
        if key != reservation:
            store.delete(key)
    store.delete(reservation)
