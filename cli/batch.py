"""``ovbatch watch | status | results | cancel | retry``, and the submission path every kind's command
uses (``submit_batch``): Redis and workers when reachable, else the embedded mode. Imports no kind."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ovbatch import kinds
from ovbatch.batches import BatchStore, RedisBatchStore
from ovbatch.crypto.keyring import Keyring
from ovbatch.errors import ConfigError
from ovbatch.kinds import JobKind
from ovbatch.registry.registry import Registry
from ovbatch.settings import Settings
from ovbatch.submission import Plan, Submission, new_batch_id, out_url_of, record_batch

from .helpers import clean_errors, open_registry, settings_of
from .progress import follow, units_text

# (batch id, registry, out url) -> the kind's jobs for this submission
Planner = Callable[[str, Registry, str], Plan]


def redis_client(settings: Settings, *, required: bool) -> Any:
    """A connected Redis client, or None (embedded mode) when it is unreachable and not required."""
    import redis

    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=1, socket_timeout=30)
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
        raise click.ClickException(
            f"batch {batch_id!r} is not known to this Redis (batches expire after 30 days; a Redis restarted "
            "without persistence loses them: submit the same command again, finished outputs are skipped)"
        )
    return s


def lost_in(store: RedisBatchStore, batch_id: str, kind: JobKind) -> list[str]:
    """The batch's open jobs that no message in Redis and no worker stands for (workers/redeliver.py)."""
    from ovbatch.workers.redeliver import lost_jobs

    return lost_jobs(store.client, store, batch_id, lambda spec: kind.queue(str(spec.get("device", "CPU"))))


def stall_check(
    settings: Settings, store: RedisBatchStore, batch_id: str, kind: JobKind
) -> Callable[[dict[str, Any]], None]:
    """For ``follow``: when a batch stops moving, find why. Open jobs that no message in Redis and no
    worker stands for (a Redis crash lost them) are queued again when this client holds the keyring
    (it signs them), else it says how; queues no live worker serves are said."""
    from ovbatch.errors import KeyringError
    from ovbatch.workers.presence import live_workers

    def check(s: dict[str, Any]) -> None:
        lost = lost_in(store, batch_id, kind)
        if lost:
            try:
                keyring = Keyring.load(settings.keyring_path)
            except KeyringError:
                raise click.ClickException(
                    f"batch {batch_id} cannot end: {len(lost)} open job(s) have no message in Redis and no worker "
                    f"(lost in a Redis restart?); `ovbatch retry {batch_id}` (with the keyring) queues them again"
                ) from None
            n = requeue(settings, store, batch_id, kind, lost, keyring, reopen=False)
            click.echo(f"batch {batch_id}: {n} open job(s) had no message in Redis (lost): queued again", err=True)
        if s["queued"] and not s["running"]:
            queues = {kind.queue(str(spec.get("device", "CPU"))) for spec in store.specs(batch_id).values()}
            serving = {q for w in live_workers(store.client) for q in str(w.get("queue", "")).split(",")}
            if not queues & serving:
                click.echo(
                    f"batch {batch_id}: {s['queued']} job(s) wait on {', '.join(sorted(queues))}, which no live "
                    "worker serves; start one (`ovbatch worker --device ...`) or cancel the batch",
                    err=True,
                )

    return check


def requeue(
    settings: Settings,
    store: BatchStore,
    batch_id: str,
    kind: JobKind,
    job_ids: list[str],
    keyring: Keyring,
    *,
    reopen: bool,
) -> int:
    """Queue ``job_ids`` of the batch again from their recorded messages, freshly signed."""
    specs = store.specs(batch_id)
    ids = [j for j in dict.fromkeys(job_ids) if j in specs]
    if not ids:
        return 0
    if reopen:
        store.reopen(batch_id)
    jobs = []
    for jid in ids:
        jobs.append(kind.spec.from_json(specs[jid]))
        store.set_job(batch_id, jid, {**(store.job(batch_id, jid) or {}), "status": "queued", "error": None})
    enqueue(settings, kind, jobs, keyring)
    return len(ids)


def print_outcome(store: BatchStore, batch_id: str, s: dict[str, Any]) -> None:
    click.echo(
        f"batch {batch_id}: {s['done']} done, {s['skipped']} skipped (already done), {s['failed']} failed, "
        f"{s['cancelled']} cancelled, {s['queued'] + s['running']} open of {s['total']}; "
        f"{units_text(s)}"
    )
    for record in sorted(store.jobs(batch_id).values(), key=lambda r: r["display"]):
        if record["status"] == "failed":
            error = record["error"] or "failed"
            shown = error if error.startswith(record["display"]) else f"{record['display']}: {error}"
            click.echo(f"  FAILED {shown}", err=True)
    click.echo(f"outputs and batch-{batch_id}.json report under {s['meta'].get('out')}")


def submit_batch(
    ctx: click.Context,
    kind: JobKind,
    planner: Planner,
    *,
    out: str,
    device: str,
    wait: bool,
    local: bool,
    overwrite: bool = False,
) -> None:
    """Plan, record and run a batch of ``kind``: queued for the device's workers through Redis, or run
    in this process (embedded mode) with ``--local`` or when Redis is unreachable."""
    settings = settings_of(ctx)
    client = None if local else redis_client(settings, required=False)
    if client is None and not local:
        click.echo(f"Redis at {settings.masked()['broker_url']} is unreachable: running in embedded mode", err=True)
    if overwrite:
        planner = _overwriting(planner)
    if client is None:
        _run_embedded(ctx, settings, kind, planner, out, device)
        return
    keyring = Keyring.load(settings.keyring_path)  # signs the messages: checked before anything is recorded
    registry = open_registry(ctx, need_keyring=False)
    store = RedisBatchStore(client)
    sub = _record(settings, kind, planner, registry, store, out)
    enqueue(settings, kind, sub.queued, keyring)
    click.echo(
        f"batch {sub.batch_id}: {len(sub.queued)} queued on {device}, {sub.skipped} already done, "
        f"{sub.failed} failed at submission; follow it with `ovbatch watch {sub.batch_id}`"
    )
    if kind.dedicated and sub.queued:
        click.echo(
            f"  {kind.name} jobs wait on their own queue {kind.queue(device)}: only workers started with "
            f"`ovbatch worker --device {device} --kinds {kind.name}` take them"
        )
    if wait:
        s = follow(
            lambda: store.summary(sub.batch_id), sub.batch_id, stalled=stall_check(settings, store, sub.batch_id, kind)
        )
        print_outcome(store, sub.batch_id, s)
        if s["failed"]:
            ctx.exit(1)


def _overwriting(planner: Planner) -> Planner:
    """``--overwrite``: the plan's jobs may replace outputs other jobs wrote (ovbatch/jobs.py claim_outputs)."""
    import msgspec

    def plan(batch_id: str, registry: Registry, out_url: str) -> Plan:
        made = planner(batch_id, registry, out_url)
        made.jobs = [msgspec.structs.replace(job, overwrite=True) for job in made.jobs]
        return made

    return plan


def _record(
    settings: Settings, kind: JobKind, planner: Planner, registry: Registry, store: BatchStore, out: str
) -> Submission:
    from ovbatch.storage import open_store
    from ovbatch.workers.runtime import finish_batch

    batch_id, out_url = new_batch_id(), out_url_of(out)
    plan = planner(batch_id, registry, out_url)
    out_store = lambda url: open_store(url, s3_endpoint_url=settings.s3_endpoint_url)  # noqa: E731
    sub = record_batch(kind, batch_id, plan, store, out_url, out_store)
    if not sub.queued:  # nothing will run, so no worker will write the report
        finish_batch(store, sub.batch_id, out_store(out_url))
    return sub


def enqueue(settings: Settings, kind: JobKind, jobs: list[Any], keyring: Keyring) -> None:
    """Queue ``jobs``, each message signed with the keyring (workers run nothing else: crypto/signing.py)."""
    from ovbatch.crypto import signing
    from ovbatch.workers.app import make_app

    app = make_app(settings)
    for job in jobs:
        payload = job.to_json()
        app.send_task(
            kind.task_name,
            args=[payload, signing.sign(keyring, kind.task_name, payload)],
            queue=kind.queue(job.device),
            task_id=f"{job.batch_id}.{job.job_id}",
            # Celery copies up to 1 KB of the arguments' repr into the headers, for logs: the job is
            # in the body already, and at a million queued jobs that copy is a GB of Redis
            argsrepr=f"({job.display[:80]!r})",
            kwargsrepr="{}",
        )


def _run_embedded(
    ctx: click.Context, settings: Settings, kind: JobKind, planner: Planner, out: str, device: str
) -> None:
    from ovbatch.workers.main import build_embedded_context
    from ovbatch.workers.runtime import process_job

    worker = build_embedded_context(settings, device)
    store = worker.batches
    sub = _record(settings, kind, planner, worker.registry, store, out)
    errors: list[BaseException] = []

    def run_all() -> None:
        from concurrent.futures import ThreadPoolExecutor

        # as a worker does: several jobs at once in threads, sharing the cached engine
        try:
            with ThreadPoolExecutor(
                max_workers=1 if kind.dedicated else worker.batch_files, thread_name_prefix="ovbatch-job"
            ) as pool:
                list(pool.map(lambda job: process_job(worker, kind, job.to_json()), sub.queued))
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
    s = summary_or_fail(store, batch_id)
    kind = kinds.get(s["meta"].get("kind", "transcribe"))
    print_outcome(
        store,
        batch_id,
        follow(lambda: store.summary(batch_id), batch_id, stalled=stall_check(settings_of(ctx), store, batch_id, kind)),
    )


@click.command()
@click.argument("batch_id")
@click.option("--json", "as_json", is_flag=True, help="The whole record as JSON.")
@click.pass_context
@clean_errors
def status(ctx: click.Context, batch_id: str, as_json: bool) -> None:
    """Counts per state, units done (audio seconds, images), times and per-job errors of BATCH_ID."""
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
    """Queue BATCH_ID's failed (not bad-input) and cancelled jobs again, and open jobs whose messages
    were lost (a Redis restart)."""
    settings = settings_of(ctx)
    keyring = Keyring.load(settings.keyring_path)
    store = batch_store(ctx)
    s = summary_or_fail(store, batch_id)
    kind = kinds.get(s["meta"].get("kind", "transcribe"))  # batches from before job kinds were transcriptions
    again = [
        jid
        for jid, r in store.jobs(batch_id).items()
        if (r["status"] == "failed" and r.get("retryable")) or r["status"] == "cancelled"
    ]
    again += lost_in(store, batch_id, kind)
    n = requeue(settings, store, batch_id, kind, again, keyring, reopen=True)
    if not n:
        click.echo(f"batch {batch_id}: nothing to retry (bad-input failures are never retried)")
        return
    click.echo(f"batch {batch_id}: {n} file(s) queued again")


def add_to(group: click.Group) -> None:
    for command in (watch, status, results, cancel, retry):
        group.add_command(command)
    for kind in kinds.all_kinds():
        for command in kind.commands():
            group.add_command(command)
