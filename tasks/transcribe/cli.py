"""``ovbatch transcribe``: bulk transcription batches (the generic submission path is cli/batch.py)."""

from __future__ import annotations

from typing import Literal, cast

import click

from ovbatch import kinds
from ovbatch.cli.batch import submit_batch
from ovbatch.cli.helpers import clean_errors, overwrite_option, settings_of, wait_or_local
from ovbatch.registry.registry import Registry
from ovbatch.submission import Plan
from ovbatch.tasks.transcribe.types import FORMATS, Format, TranscribeOptions


def _options(
    formats: str, language: str, task: str, word_timestamps: bool = False, timestamps: bool | None = None
) -> tuple[tuple[Format, ...], TranscribeOptions]:
    chosen = tuple(cast(Format, f.strip().lower()) for f in formats.split(",") if f.strip())
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise click.BadParameter(
            f"{','.join(bad) or formats!r}: choose from {','.join(FORMATS)}", param_hint="--format"
        )
    lang = None if language.lower() == "auto" else language.lower()
    if timestamps is None:  # txt alone shows no times: decode none (faster), unless words are asked for
        timestamps = word_timestamps or set(chosen) != {"txt"}
    if word_timestamps and not timestamps:
        raise click.BadParameter("--word-timestamps needs segment timestamps", param_hint="--no-timestamps")
    return chosen, TranscribeOptions(
        language=lang,
        task=cast(Literal["transcribe", "translate"], task),
        word_timestamps=word_timestamps,
        timestamps=timestamps,
    )


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--model", required=True, help="Registry model, NAME or NAME@VERSION.")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device whose queue gets the jobs.")
@click.option("--out", required=True, help="Where outputs go: s3://bucket/prefix/, file:///dir or a local dir.")
@click.option("--format", "formats", default=",".join(FORMATS), show_default=True)
@click.option("--language", default="auto", show_default=True, help="Whisper language code, or auto to detect.")
@click.option("--task", type=click.Choice(["transcribe", "translate"]), default="transcribe", show_default=True)
@click.option("--word-timestamps", is_flag=True, help="Time each word (json output: words per segment); 7-16 % slower.")
@click.option(
    "--timestamps/--no-timestamps",
    default=None,
    help="Decode Whisper's timestamp tokens (segments timed to 20 ms). --no-timestamps: each piece of a "
    "file (cut at pauses, up to 30 s) is one segment, about 1.2x faster on long files. "
    "Default: off when txt is the only format, else on.",
)
@click.option("--max-duration-s", type=float, default=None, help="Longer files fail (default: settings).")
@overwrite_option
@wait_or_local
@click.pass_context
@clean_errors
def transcribe(
    ctx: click.Context,
    sources: tuple[str, ...],
    model: str,
    device: str,
    out: str,
    formats: str,
    language: str,
    task: str,
    word_timestamps: bool,
    timestamps: bool | None,
    max_duration_s: float | None,
    overwrite: bool,
    wait: bool,
    local: bool,
) -> None:
    """Transcribe SOURCES (files, dirs, globs, .zip/.tar archives, s3:// prefixes, @manifest files)."""
    from ovbatch.tasks.transcribe.submit import plan

    settings = settings_of(ctx)
    chosen, options = _options(formats, language, task, word_timestamps, timestamps)
    kind = kinds.get("transcribe")

    def planner(batch_id: str, registry: Registry, out_url: str) -> Plan:
        from ovbatch.registry.refs import ModelRef

        kind.check_model(registry.manifest(ModelRef.parse(model), verify_mac=False))  # the worker verifies
        return plan(
            list(sources),
            batch_id=batch_id,
            registry=registry,
            out_url=out_url,
            model=model,
            device=device,
            options=options,
            formats=chosen,
            max_audio_duration_s=max_duration_s or settings.max_audio_duration_s,
            s3_endpoint_url=settings.s3_endpoint_url,
        )

    submit_batch(ctx, kind, planner, out=out, device=device, wait=wait, local=local, overwrite=overwrite)
