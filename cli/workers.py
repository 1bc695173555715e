"""``ovbatch worker`` (start one) and ``ovbatch workers`` (list the live ones)."""

from __future__ import annotations

import time

import click

from .batch import redis_client
from .helpers import clean_errors, human_bytes, settings_of


@click.command()
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device; the worker serves its queue.")
@click.option("--cpus", default=None, help="Pin this worker (and OpenVINO's threads) to these cores, e.g. 0-7.")
@click.option("--name", default=None, help="Worker name prefix (default: the device).")
@click.option(
    "--kinds",
    default=None,
    help="Job kinds to take, comma-separated (default: every kind but quantize). `--kinds quantize` makes a "
    "quantization worker: its own queue, one job at a time, nothing else.",
)
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
@clean_errors
def worker(
    ctx: click.Context, device: str, cpus: str | None, name: str | None, kinds: str | None, loglevel: str
) -> None:
    """Run a worker pinned to one OpenVINO device (several jobs at once, batched; start more to scale)."""
    from ovbatch.workers.main import parse_cpus, run_worker, worker_queues

    settings = settings_of(ctx)
    kind_names = [k.strip() for k in kinds.split(",") if k.strip()] if kinds else None
    worker_queues(device, kind_names)  # a bad --kinds fails before Redis is asked
    redis_client(settings, required=True)
    run_worker(settings, device, parse_cpus(cpus) if cpus else None, name, loglevel, kind_names)


@click.command()
@click.pass_context
@clean_errors
def workers(ctx: click.Context) -> None:
    """List live workers: device, queue, cached models, jobs done."""
    from ovbatch.workers.presence import live_workers

    found = live_workers(redis_client(settings_of(ctx), required=True))
    if not found:
        click.echo("no live workers (start one with `ovbatch worker --device CPU`)")
    for w in found:
        cache = w["cache"]
        models = ", ".join(cache["models"]) or "none"
        click.echo(
            f"{w['hostname']}  device {w['device']}  queue {w['queue']}  cpus {w['cpus'] or 'all'}  "
            f"jobs done {w['jobs_done']}  up {time.time() - w['started_s']:.0f} s\n"
            f"    cached: {models} ({human_bytes(cache['bytes'])}; hits {cache['hits']}, misses {cache['misses']}, "
            f"evictions {cache['evictions']})" + (f"\n    running: {w['current_job']}" if w["current_job"] else "")
        )
