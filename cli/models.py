"""``ovbatch models``: import, list, show, verify and remove encrypted models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ovbatch.registry import extensions
from ovbatch.registry.loader import verify as verify_version
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry

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
@click.option("--lora", "is_lora", is_flag=True, help="SOURCE is a LoRA adapter (.safetensors, kohya or PEFT form).")
@click.option("--base", default=None, help="With --lora: the SD model NAME[@VERSION] it must apply to (checked now).")
@click.option(
    "--extension",
    "libraries",
    multiple=True,
    type=click.Path(path_type=Path),
    help="An OpenVINO extension library (.so) defining custom operations the model uses (repeatable; "
    "*.so files inside SOURCE are taken too). Stored encrypted, loaded from memory.",
)
@click.option(
    "--gpu-config",
    type=click.Path(path_type=Path),
    default=None,
    help="A GPU custom-layer config (CONFIG_FILE); the OpenCL sources it names come along. Stored encrypted.",
)
@click.pass_context
@clean_errors
def import_(
    ctx: click.Context,
    source: Path,
    name: str,
    version: str | None,
    task: str | None,
    is_lora: bool,
    base: str | None,
    libraries: tuple[Path, ...],
    gpu_config: Path | None,
) -> None:
    """Import SOURCE (OpenVINO IR, Hugging Face or faster-whisper folder, SD 1.x .safetensors, or a LoRA
    with --lora) as a new encrypted version."""
    registry = open_registry(ctx)
    if is_lora:
        if libraries or gpu_config:
            raise click.BadParameter("a LoRA adapter has no custom operations", param_hint="--extension/--gpu-config")
        _import_lora(registry, source, name, version, task, base)
        return
    if base is not None:
        raise click.BadParameter("--base names the base model of a LoRA: use it with --lora", param_hint="--base")
    manifest = registry.import_folder(source, name, version, task, libraries, gpu_config)
    size = sum(f["size"] for f in manifest["files"])
    click.echo(
        f"imported {manifest['name']}@{manifest['version']}: {manifest['kind']}, {manifest['precision']}, "
        f"{len(manifest['files'])} files, {human_bytes(size)}, encrypted with key {manifest['key_id']}"
    )
    for line in _custom_ops(manifest):
        click.echo(f"  {line}")


def _custom_ops(manifest: dict[str, Any]) -> list[str]:
    """One line per extension library or GPU custom-layer config the version carries."""
    sizes = {f["role"]: f["size"] for f in manifest["files"]}
    lines = []
    for entry in extensions.of(manifest):
        role = entry["role"]
        if entry["kind"] == extensions.GPU_CONFIG:
            lines.append(f"GPU custom-layer config {role} ({human_bytes(sizes.get(role, 0))}), kernels: "
                         f"{', '.join(entry.get('kernels', [])) or 'none'}")  # fmt: skip
        else:
            lines.append(f"extension library {role} ({human_bytes(sizes.get(role, 0))}), loaded from memory")
    return lines


def _import_lora(
    registry: Registry, source: Path, name: str, version: str | None, task: str | None, base: str | None
) -> None:
    if task is not None:
        raise click.BadParameter("a LoRA adapter is not exported: leave out --task", param_hint="--task")
    manifest = registry.import_lora(source, name, version, ModelRef.parse(base) if base else None)
    info = manifest["lora"]
    click.echo(
        f"imported {manifest['name']}@{manifest['version']}: lora ({info['source_format']}, rank "
        f"{'/'.join(map(str, info['ranks']))}, {' + '.join(info['targets'])}, {info['modules']} modules, "
        f"{info['keys']} tensors), encrypted with key {manifest['key_id']}"
    )
    if "base" in info:
        click.echo(f"  applies to {info['base']}: {info['matched']} of {info['modules']} modules match its layers")
    if info.get("unmatched"):
        shown = ", ".join(info["unmatched"][:5]) + (" ..." if info["unmatched_count"] > 5 else "")
        click.echo(f"  {info['unmatched_count']} modules match no layer, so openvino_genai leaves them out: {shown}")


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
        lineage = m.get("lineage") or {}
        parent = f"  from {lineage['parent']} ({lineage['recipe']})" if lineage else ""
        click.echo(f"{ref!s:30} {m['kind']:16} {m['precision']:8} {size:>10}  {m['created']}{parent}")
        rows += 1
    if not rows:
        click.echo(f"no models in {registry.store.url}; add one with `ovbatch models import`")
    left = [u for u in registry.unfinished_imports() if u.state != "running"]
    if left:
        click.echo(
            f"{len(left)} unfinished import(s) (killed before their manifest was written; never visible): "
            "`ovbatch models clean` lists and removes them",
            err=True,
        )


@models.command("show")
@click.argument("ref")
@click.pass_context
@clean_errors
def show(ctx: click.Context, ref: str) -> None:
    """Print the manifest of NAME[@VERSION] (the wrapped key is not shown)."""
    registry = open_registry(ctx, need_keyring=False)
    manifest = registry.manifest(ModelRef.parse(ref), verify_mac=False)
    manifest.pop("wrapped_key", None)
    for line in _custom_ops(manifest):
        click.echo(f"custom operations: {line}", err=True)
    lineage = manifest.get("lineage")
    if lineage:
        gate = lineage.get("gate", {})
        size = lineage.get("size_bytes", {})
        click.echo(
            f"lineage: {lineage['parent']} -> {lineage['recipe']} "
            f"{json.dumps(lineage.get('params', {}), sort_keys=True)}; "
            f"gate {'passed' if gate.get('passed') else 'FAILED'} (max drop {gate.get('max_drop')}); "
            f"size {human_bytes(size.get('before', 0))} -> {human_bytes(size.get('after', 0))}; "
            f"NNCF {lineage.get('nncf')}, OpenVINO {str(lineage.get('openvino', '')).split('-')[0]}",
            err=True,
        )
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
    if report["extensions"]:
        click.echo(f"  extension libraries, loaded from memory: {', '.join(report['extensions'])}")
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


@models.command("clean")
@click.option(
    "--older-than",
    "older_than_h",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="Hours: leftovers of imports by other hosts go once this old (this host's dead ones always go).",
)
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.pass_context
@clean_errors
def clean(ctx: click.Context, older_than_h: float, dry_run: bool) -> None:
    """Remove what killed imports left: version folders with no manifest (their reservation and any
    encrypted files). Imports still running on this host are never touched."""
    registry = open_registry(ctx, need_keyring=False)
    found = registry.unfinished_imports()
    chosen = registry.clean_unfinished(older_than_s=older_than_h * 3600, dry_run=dry_run)
    for item in found:
        mark = ("would remove" if dry_run else "removed") if item in chosen else "kept"
        click.echo(f"{mark:>12}  {item.describe()}")
    if not found:
        click.echo("no unfinished imports")
