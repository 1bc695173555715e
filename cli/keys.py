"""``ovbatch keys``: key-encryption keys in the keyring."""

from __future__ import annotations

from collections import Counter

import click

from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import OvbatchError
from ovbatch.registry.registry import Registry
from ovbatch.storage import open_store

from .helpers import clean_errors, open_registry, settings_of


@click.group()
def keys() -> None:
    """Manage key-encryption keys (the keyring file, mode 0600)."""


@keys.command("new")
@click.pass_context
@clean_errors
def new(ctx: click.Context) -> None:
    """Create a key-encryption key and make it the active one."""
    path = settings_of(ctx).keyring_path
    ring = Keyring.load_or_empty(path)
    kid = ring.add_new_key()
    ring.save()
    click.echo(f"created key {kid} in {path} (mode 0600); it is now the active key")


@keys.command("list")
@click.pass_context
@clean_errors
def list_keys(ctx: click.Context) -> None:
    """List key ids, which is active, and how many model versions each wraps."""
    registry = open_registry(ctx)
    used = Counter(registry.manifest(ref, verify_mac=False)["key_id"] for ref in registry.all_versions())
    for kid, entry in sorted(registry.keyring.keys.items()):
        mark = "*" if kid == registry.keyring.active else " "
        click.echo(f"{mark} {kid}  created {entry.get('created', '?')}  wraps {used[kid]} model version(s)")


@keys.command("rotate")
@click.pass_context
@clean_errors
def rotate(ctx: click.Context) -> None:
    """Make a new key, rewrap every model version's data key with it, then drop unused old keys.

    Encrypted model files are not touched: only each manifest's wrapped key changes.
    """
    settings = settings_of(ctx)
    ring = Keyring.load(settings.keyring_path)
    store = open_store(settings.storage_url, s3_endpoint_url=settings.s3_endpoint_url)
    registry = Registry(store, ring)
    versions = list(registry.all_versions())
    kid = ring.add_new_key()
    ring.save()  # the new key is safe on disk before any manifest depends on it
    failed = []
    for ref in versions:
        try:
            registry.rewrap(ref)
        except OvbatchError as exc:
            failed.append(f"{ref}: {exc}")
    still_used = {registry.manifest(r, verify_mac=False)["key_id"] for r in versions}
    retired = [k for k in list(ring.keys) if k != kid and k not in still_used]
    for old in retired:
        ring.remove(old)
    ring.save()
    click.echo(
        f"new active key {kid}; rewrapped {len(versions) - len(failed)} model version(s); "
        f"removed {len(retired)} unused old key(s)"
    )
    if failed:
        raise click.ClickException("could not rewrap:\n  " + "\n  ".join(failed))
