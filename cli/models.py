"""``ovbatch models``: import, list, show, verify and remove encrypted models."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ovbatch.registry.loader import verify as verify_version
from ovbatch.registry.refs import ModelRef

from .helpers import clean_errors, human_bytes, open_registry


@click.group()
def models() -> None:
    """The encrypted model registry."""


@models.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Registry name, e.g. whisper-base.")
@click.option("--version", default=None, help="Explicit version number (default: newest + 1).")
@click.option(
    "--task", default=None, help="optimum export task for Hugging Face folders (default: from the architecture)."
)
@click.pass_context
@clean_errors
def import_(ctx: click.Context, source: Path, name: str, version: str | None, task: str | None) -> None:
    """Import SOURCE (OpenVINO IR, Hugging Face or faster-whisper folder) as a new encrypted version."""
    registry = open_registry(ctx)
    manifest = registry.import_folder(source, name, version, task)
    size = sum(f["size"] for f in manifest["files"])
    click.echo(
        f"imported {manifest['name']}@{manifest['version']}: {manifest['kind']}, {manifest['precision']}, "
        f"{len(manifest['files'])} files, {human_bytes(size)}, encrypted with key {manifest['key_id']}"
    )


@models.command("list")
@click.pass_context
@clean_errors
def list_(ctx: click.Context) -> None:
    """List every model version in the registry."""
    registry = open_registry(ctx, need_keyring=False)
    rows = 0
    for ref in registry.all_versions():
        m = registry.manifest(ref, verify_mac=False)
        size = human_bytes(sum(f["size"] for f in m["files"]))
        click.echo(f"{ref!s:30} {m['kind']:16} {m['precision']:8} {size:>10}  {m['created']}")
        rows += 1
    if not rows:
        click.echo(f"no models in {registry.store.url}; add one with `ovbatch models import`")


@models.command("show")
@click.argument("ref")
@click.pass_context
@clean_errors
def show(ctx: click.Context, ref: str) -> None:
    """Print the manifest of NAME[@VERSION] (the wrapped key is not shown)."""
    registry = open_registry(ctx, need_keyring=False)
    manifest = registry.manifest(ModelRef.parse(ref), verify_mac=False)
    manifest.pop("wrapped_key", None)
    click.echo(json.dumps(manifest, indent=2, sort_keys=True))


@models.command("verify")
@click.argument("ref")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device to compile on.")
@click.pass_context
@clean_errors
def verify(ctx: click.Context, ref: str, device: str) -> None:
    """Fetch, authenticate, decrypt in memory, read and compile every model of NAME[@VERSION]."""
    registry = open_registry(ctx)
    report = verify_version(registry, ModelRef.parse(ref), device)
    secs = report["seconds"]
    click.echo(
        f"verified {report['ref']} on {device}: {report['files']} files, "
        f"{human_bytes(report['plaintext_bytes'])} authenticated and decrypted in memory"
    )
    click.echo(f"  compiled: {', '.join(report['models'])}")
    phases = "  ".join(f"{k} {secs.get(k, 0.0):.3f} s" for k in ("fetch", "decrypt", "digest", "read_model", "compile"))
    click.echo(f"  time: {phases}  (wall {report['wall_s']:.3f} s: decryption runs beside compilation)")


@models.command("rm")
@click.argument("ref")
@click.pass_context
@clean_errors
def rm(ctx: click.Context, ref: str) -> None:
    """Remove NAME@VERSION (the version number is required)."""
    registry = open_registry(ctx, need_keyring=False)
    parsed = ModelRef.parse(ref)
    registry.remove(parsed)
    click.echo(f"removed {parsed}")
