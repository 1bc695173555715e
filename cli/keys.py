"""``ovbatch keys``: key-encryption keys in the keyring.

Rotation never stops a running fleet: old keys are retired, not removed, so workers and imports that
still hold the old keyring keep working (they re-read the file on demand), and ``keys prune`` removes
a retired key only after a grace period and only once no model version is wrapped with it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import click

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import ModelNotFound, OvbatchError
from ovbatch.registry.registry import Registry
from ovbatch.settings import Settings
from ovbatch.storage import open_store

from .helpers import clean_errors, open_registry, settings_of

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@click.group()
def keys() -> None:
    """Manage key-encryption keys (the keyring file, mode 0600)."""


@keys.command("new")
@click.pass_context
@clean_errors
def new(ctx: click.Context) -> None:
    """Create a key-encryption key and make it the active one (the previous one is retired)."""
    path = settings_of(ctx).keyring_path
    with Keyring.editing(path, create=True) as ring:
        kid = ring.add_new_key()
    click.echo(f"created key {kid} in {path} (mode 0600); it is now the active key")


@keys.command("list")
@click.pass_context
@clean_errors
def list_keys(ctx: click.Context) -> None:
    """List key ids, their state (active, staged, retired), and how many model versions each wraps."""
    registry = open_registry(ctx)
    used = Counter(registry.manifest(ref, verify_mac=False)["key_id"] for ref in registry.all_versions())
    ring = registry.keyring
    for kid, entry in sorted(ring.keys.items()):
        mark = "*" if kid == ring.active else " "
        state = ring.state(kid)
        if state == "retired":
            state = f"retired {entry['retired']}"
        click.echo(f"{mark} {kid}  created {entry.get('created', '?')}  {state}  wraps {used[kid]} model version(s)")


@keys.command("rotate")
@click.option(
    "--stage",
    is_flag=True,
    help="Only add the next key, inactive, so that copies of the keyring (a Kubernetes secret) can carry it "
    "to every worker first; a later `keys rotate` makes it active and rewraps.",
)
@click.pass_context
@clean_errors
def rotate(ctx: click.Context, stage: bool) -> None:
    """Make a new active key, rewrap every model version's data key with it, and retire the old keys.

    Encrypted model files are not touched: only each manifest's wrapped key changes. Retired keys stay
    in the keyring until `ovbatch keys prune`, so running workers and imports never lose a key.
    """
    settings = settings_of(ctx)
    if stage:
        with Keyring.editing(settings.keyring_path) as ring:
            kid = ring.staged() or ring.stage_new_key()
        click.echo(
            f"staged key {kid} in {settings.keyring_path}: copy this keyring to every worker, "
            "then run `ovbatch keys rotate` to make it active and rewrap"
        )
        return
    with Keyring.editing(settings.keyring_path) as ring:
        kid = ring.staged() or ring.stage_new_key()
        retired = ring.activate(kid)
    # saved: from now on every reader of this file learns the new key when it first meets it
    registry = Registry(open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url), ring)
    rewrapped, failed = 0, []
    for ref in registry.all_versions():
        try:
            registry.rewrap(ref)
            rewrapped += 1
        except ModelNotFound:
            pass  # removed since it was listed
        except OvbatchError as exc:
            failed.append(f"{ref}: {exc}")
    click.echo(
        f"new active key {kid}; rewrapped {rewrapped} model version(s); "
        f"retired {len(retired)} old key(s): they stay in the keyring until `ovbatch keys prune`"
    )
    if failed:
        raise click.ClickException(
            "could not rewrap (they stay wrapped with a retired key, which is kept):\n  " + "\n  ".join(failed)
        )


def _duration(ctx: click.Context, param: click.Parameter, value: str) -> timedelta:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", value.strip())
    if match is None:
        raise click.BadParameter(f"{value!r} is not a duration: use e.g. 90s, 30m, 24h or 7d")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2] or "s"])


@keys.command("prune")
@click.option(
    "--older-than",
    "grace",
    default="24h",
    show_default=True,
    callback=_duration,
    help="Remove only keys retired longer ago than this (s, m, h or d): long enough for every copy of "
    "the keyring and every import that started before the rotation.",
)
@click.option("--yes", is_flag=True, help="Do not ask before removing.")
@click.pass_context
@clean_errors
def prune(ctx: click.Context, grace: timedelta, yes: bool) -> None:
    """Remove retired keys past the grace period that no model version is wrapped with any more.

    Just before removing, every manifest is read again; a version still wrapped with such a key (an
    import that ran during the rotation) is rewrapped with the active key, and a key whose versions
    cannot be rewrapped is kept, named with those versions.
    """
    settings = settings_of(ctx)
    cutoff = datetime.now(UTC) - grace
    ring = Keyring.load(settings.keyring_path)
    due, waiting = _due(ring, cutoff)
    for kid in waiting:
        click.echo(f"kept {kid}: retired {ring.keys[kid]['retired']}, within the grace period ({grace})")
    if not due:
        click.echo("no retired key to prune")
        return
    if not yes:
        click.confirm(f"remove {', '.join(due)} from {settings.keyring_path}?", abort=True)
    store = open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
    with Keyring.editing(settings.keyring_path) as ring:  # the keyring as it is now, locked
        due = [kid for kid in _due(ring, cutoff)[0] if kid in due]  # no more than was asked
        stuck = _move_off(Registry(store, ring), set(due))
        for kid in due:  # job messages still queued may be signed with it (ovbatch/crypto/signing.py)
            retired = ring.retired_at(kid)
            for batch_id in _open_batches_before(settings, retired) if retired else []:
                stuck[kid].append(f"batch {batch_id} is still open: its queued job messages are signed with it")
        for kid in due:
            if kid not in stuck:
                ring.remove(kid)
    removed = [kid for kid in due if kid not in stuck]
    click.echo(f"removed {len(removed)} retired key(s){': ' if removed else ''}{', '.join(removed)}")
    if stuck:
        raise click.ClickException(
            "kept, still in use:\n  "
            + "\n  ".join(f"{kid}: {'; '.join(versions)}" for kid, versions in sorted(stuck.items()))
        )


def _open_batches_before(settings: Settings, when: datetime) -> list[str]:
    """Batches created before ``when`` that still have queued or running jobs (none if Redis is unreachable)."""
    from ovbatch.batches import RedisBatchStore

    from .batch import redis_client

    client = redis_client(settings, required=False)
    if client is None:
        return []
    store = RedisBatchStore(client)
    found = []
    # the keyring stamps times to the second (``retired`` is truncated): a batch queued in the same
    # second as the rotation, just before it, scores up to a second after the stamp; counting the
    # whole second keeps the key at worst a little longer
    for raw in client.zrangebyscore(f"{store.prefix}:batches", 0, when.timestamp() + 1):
        batch_id = raw.decode()
        s = store.summary(batch_id)
        if s is not None and s["ended_s"] is None and (s["queued"] or s["running"]):
            found.append(batch_id)
    return found


def _due(ring: Keyring, cutoff: datetime) -> tuple[list[str], list[str]]:
    """Retired keys split into those retired before ``cutoff`` and those still in their grace period."""
    retired = {kid: at for kid in sorted(ring.keys) if (at := ring.retired_at(kid)) is not None}
    return [k for k, at in retired.items() if at <= cutoff], [k for k, at in retired.items() if at > cutoff]


def _move_off(registry: Registry, kids: set[str]) -> dict[str, list[str]]:
    """Rewrap every version wrapped with one of ``kids`` with the active key; return, per key, the
    versions still wrapped with it. A manifest that cannot be read may use any of them: it keeps them all."""
    stuck: dict[str, list[str]] = defaultdict(list)
    for ref in registry.all_versions() if kids else ():
        kid = None
        try:
            kid = registry.manifest(ref, verify_mac=False).get("key_id")
            if not isinstance(kid, str):
                raise OvbatchError("its manifest names no key id")
            if kid in kids:
                registry.rewrap(ref)
        except ModelNotFound:
            continue  # removed since it was listed
        except OvbatchError as exc:
            for k in [kid] if isinstance(kid, str) and kid in kids else sorted(kids):
                stuck[k].append(f"{ref} ({exc})")
    return stuck
