"""``ovbatch transcribe | watch | status | results | cancel | retry``: bulk transcription batches."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ovbatch.batches import BatchStore, RedisBatchStore
from ovbatch.errors import ConfigError
from ovbatch.settings import Settings
from ovbatch.tasks.transcribe.types import FORMATS, TranscribeOptions

from .helpers import clean_errors, open_registry, settings_of
from .progress import follow

if TYPE_CHECKING:
    from ovbatch.tasks.transcribe.submit import Submission


def redis_client(settings: Settings, *, required: bool) -> Any:
    """A connected Redis client, or None (embedded mode) when it is unreachable and not required."""
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        if required:
            raise ConfigError(f"Redis at {settings.masked()['broker_url']} is unreachable: {exc}") from exc
        return None
    return client


def batch_store(ctx: click.Context) -> RedisBatchStore:
    return RedisBatchStore(redis_client(settings_of(ctx), required=True))


def summary_or_fail(store: BatchStore, batch_id: str) -> dict[str, Any]:
    s = store.summary(batch_id)
    if s is None:
        raise click.ClickException(f"batch {batch_id!r} is not known to this Redis (batches expire after 30 days)")
    return s


def print_outcome(store: BatchStore, batch_id: str, s: dict[str, Any]) -> None:
    click.echo(
        f"batch {batch_id}: {s['done']} done, {s['skipped']} skipped (already done), {s['failed']} failed, "
        f"{s['cancelled']} cancelled, {s['queued'] + s['running']} open of {s['total']}; "
        f"{s['audio_s']:.1f} s of audio"
    )
    for record in sorted(store.jobs(batch_id).values(), key=lambda r: r["display"]):
        if record["status"] == "failed":
            error = record["error"] or "failed"
            shown = error if error.startswith(record["display"]) else f"{record['display']}: {error}"
            click.echo(f"  FAILED {shown}", err=True)
    click.echo(f"outputs and batch-{batch_id}.json report under {s['meta'].get('out')}")


def _options(
    formats: str, language: str, task: str, word_timestamps: bool = False
) -> tuple[tuple[str, ...], TranscribeOptions]:
    chosen = tuple(f.strip().lower() for f in formats.split(",") if f.strip())
    bad = [f for f in chosen if f not in FORMATS]
    if bad or not chosen:
        raise click.BadParameter(
            f"{','.join(bad) or formats!r}: choose from {','.join(FORMATS)}", param_hint="--format"
        )
    lang = None if language.lower() == "auto" else language.lower()
    return chosen, TranscribeOptions(language=lang, task=task, word_timestamps=word_timestamps)  # type: ignore[arg-type]


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--model", required=True, help="Registry model, NAME or NAME@VERSION.")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device whose queue gets the jobs.")
@click.option("--out", required=True, help="Where outputs go: s3://bucket/prefix/, file:///dir or a local dir.")
@click.option("--format", "formats", default=",".join(FORMATS), show_default=True)
@click.option("--language", default="auto", show_default=True, help="Whisper language code, or auto to detect.")
@click.option("--task", type=click.Choice(["transcribe", "translate"]), default="transcribe", show_default=True)
@click.option("--word-timestamps", is_flag=True, help="Time each word (json output: words per segment); 7-16 % slower.")
@click.option("--max-duration-s", type=float, default=None, help="Longer files fail (default: settings).")
@click.option("--wait", is_flag=True, help="Show progress until the batch ends.")
@click.option("--local", is_flag=True, help="Run in this process, no Redis or workers (embedded mode).")
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
    max_duration_s: float | None,
    wait: bool,
    local: bool,
) -> None:
    """Transcribe SOURCES (files, dirs, globs, .zip/.tar archives, s3:// prefixes, @manifest files)."""
    settings = settings_of(ctx)
    chosen, options = _options(formats, language, task, word_timestamps)
    client = None if local else redis_client(settings, required=False)
    if client is None and not local:
        click.echo(f"Redis at {settings.masked()['broker_url']} is unreachable: running in embedded mode", err=True)
    registry = open_registry(ctx, need_keyring=client is None)
    if client is None:
        _run_embedded(ctx, settings, list(sources), model, device, out, chosen, options, max_duration_s)
        return
    store = RedisBatchStore(client)
    sub = _submit(settings, registry, store, list(sources), model, device, out, chosen, options, max_duration_s)
    _enqueue(settings, sub)
    click.echo(
        f"batch {sub.batch_id}: {len(sub.queued)} queued on {device}, {sub.skipped} already done, "
        f"{sub.failed} failed at submission; follow it with `ovbatch watch {sub.batch_id}`"
    )
    if wait:
        s = follow(lambda: store.summary(sub.batch_id), sub.batch_id)
        print_outcome(store, sub.batch_id, s)
        if s["failed"]:
            ctx.exit(1)


def _submit(
    settings: Settings,
    registry: Any,
    store: BatchStore,
    sources: list[str],
    model: str,
    device: str,
    out: str,
    formats: tuple[str, ...],
    options: TranscribeOptions,
    max_duration_s: float | None,
) -> Submission:
    from ovbatch.storage import open_store
    from ovbatch.tasks.transcribe.submit import submit
    from ovbatch.workers.runtime import write_report

    sub = submit(
        sources,
        registry=registry,
        batches=store,
        out=out,
        model=model,
        device=device,
        options=options,
        formats=formats,
        max_audio_duration_s=max_duration_s or settings.max_audio_duration_s,
        s3_endpoint_url=settings.s3_endpoint_url,
        out_store=lambda url: open_store(url, s3_endpoint_url=settings.s3_endpoint_url),
    )
    if not sub.queued:  # nothing will run, so no worker will write the report
        meta = (store.summary(sub.batch_id) or {}).get("meta", {})
        write_report(store, sub.batch_id, open_store(meta["out"], s3_endpoint_url=settings.s3_endpoint_url))
    return sub


def _enqueue(settings: Settings, sub: Submission) -> None:
    from ovbatch.workers.app import make_app, queue_for
    from ovbatch.workers.tasks import TRANSCRIBE

    app = make_app(settings)
    for job in sub.queued:
        app.send_task(
            TRANSCRIBE, args=[job.to_json()], queue=queue_for(job.device), task_id=f"{job.batch_id}.{job.job_id}"
        )


def _run_embedded(
    ctx: click.Context,
    settings: Settings,
    sources: list[str],
    model: str,
    device: str,
    out: str,
    formats: tuple[str, ...],
    options: TranscribeOptions,
    max_duration_s: float | None,
) -> None:
    from ovbatch.workers.main import build_embedded_context
    from ovbatch.workers.runtime import process_job

    worker = build_embedded_context(settings, device)
    store = worker.batches
    sub = _submit(settings, worker.registry, store, sources, model, device, out, formats, options, max_duration_s)
    errors: list[BaseException] = []

    def run_all() -> None:
        from concurrent.futures import ThreadPoolExecutor

        # as a worker does: several jobs at once, their windows batched through one engine
        try:
            with ThreadPoolExecutor(max_workers=worker.batch_files, thread_name_prefix="ovbatch-job") as pool:
                list(pool.map(lambda job: process_job(worker, job.to_json()), sub.queued))
        except BaseException as exc:  # surfaced below, after the progress display ends
            errors.append(exc)
            store.cancel(sub.batch_id)

    runner = threading.Thread(target=run_all, name="ovbatch-embedded", daemon=True)
    runner.start()
    s = (
        follow(lambda: store.summary(sub.batch_id), sub.batch_id)
        if sub.queued
        else summary_or_fail(store, sub.batch_id)
    )
    runner.join()
    if errors:
        raise errors[0]
    print_outcome(store, sub.batch_id, s)
    if s["failed"]:
        ctx.exit(1)


@click.command()
@click.argument("batch_id")
@click.pass_context
@clean_errors
def watch(ctx: click.Context, batch_id: str) -> None:
    """Follow BATCH_ID's progress live (reattaches to a batch started anywhere)."""
    store = batch_store(ctx)
    summary_or_fail(store, batch_id)
    print_outcome(store, batch_id, follow(lambda: store.summary(batch_id), batch_id))


@click.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@click.pass_context
@clean_errors
def status(ctx: click.Context, batch_id: str, as_json: bool) -> None:
    """Counts per state, audio seconds, times and per-file errors of BATCH_ID."""
    store = batch_store(ctx)
    s = summary_or_fail(store, batch_id)
    if as_json:
        click.echo(json.dumps({"summary": s, "jobs": store.jobs(batch_id)}, indent=2))
        return
    print_outcome(store, batch_id, s)


@click.command()
@click.argument("batch_id")
@click.option("--download", type=click.Path(path_type=Path), default=None, help="Copy every output into DIR.")
@click.pass_context
@clean_errors
def results(ctx: click.Context, batch_id: str, download: Path | None) -> None:
    """List BATCH_ID's outputs per input; optionally download them."""
    from ovbatch.storage import open_store

    settings = settings_of(ctx)
    store = batch_store(ctx)
    s = summary_or_fail(store, batch_id)
    out = open_store(s["meta"]["out"], s3_endpoint_url=settings.s3_endpoint_url)
    for record in sorted(store.jobs(batch_id).values(), key=lambda r: r["display"]):
        click.echo(f"{record['status']:9} {record['display']}")
        for key in record.get("outputs") or []:
            click.echo(f"          {s['meta']['out']}{key}")
            if download is not None:
                target = download / key
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(out.get_bytes(key))


@click.command()
@click.argument("batch_id")
@click.pass_context
@clean_errors
def cancel(ctx: click.Context, batch_id: str) -> None:
    """Stop BATCH_ID: queued files are skipped, running ones stop within seconds (both end cancelled)."""
    store = batch_store(ctx)
    summary_or_fail(store, batch_id)
    store.cancel(batch_id)
    click.echo(f"batch {batch_id}: cancel requested; running files stop within seconds, queued ones are skipped")


@click.command()
@click.argument("batch_id")
@click.pass_context
@clean_errors
def retry(ctx: click.Context, batch_id: str) -> None:
    """Queue BATCH_ID's failed (not bad-input) and cancelled files again."""
    from ovbatch.tasks.transcribe.spec import TranscribeJob
    from ovbatch.tasks.transcribe.submit import Submission

    settings = settings_of(ctx)
    store = batch_store(ctx)
    summary_or_fail(store, batch_id)
    specs = store.specs(batch_id)
    again = [
        jid
        for jid, r in store.jobs(batch_id).items()
        if (r["status"] == "failed" and r.get("retryable")) or r["status"] == "cancelled"
    ]
    again = [jid for jid in again if jid in specs]
    if not again:
        click.echo(f"batch {batch_id}: nothing to retry (bad-input failures are never retried)")
        return
    store.reopen(batch_id)
    sub = Submission(batch_id)
    for jid in again:
        job = TranscribeJob.from_json(specs[jid])
        store.set_job(batch_id, jid, {**store.jobs(batch_id)[jid], "status": "queued", "error": None})
        sub.queued.append(job)
    _enqueue(settings, sub)
    click.echo(f"batch {batch_id}: {len(again)} file(s) queued again")


def add_to(group: click.Group) -> None:
    for command in (transcribe, watch, status, results, cancel, retry):
        group.add_command(command)
