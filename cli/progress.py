"""Live batch progress: jobs done and failed, the kind's units (audio seconds, images) and finer work
(denoising steps), throughput, ETA. The kind's ``Unit`` travels in the batch meta."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import click
from redis.exceptions import RedisError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

AUDIO = {"name": "audio_s", "label": "s of audio", "rate": "x real time", "rate_per_s": 1.0, "work": None}


def unit_of(s: dict[str, Any]) -> dict[str, Any]:
    return s.get("meta", {}).get("unit") or AUDIO  # batches from before job kinds were transcriptions


def units_text(s: dict[str, Any]) -> str:
    unit = unit_of(s)
    digits = 1 if unit["name"].endswith("_s") else 0
    return f"{s['units']:.{digits}f} {unit['label']}"


def describe(s: dict[str, Any], now: float) -> str:
    unit = unit_of(s)
    started = s.get("started_s") or now
    elapsed = max((s.get("ended_s") or now) - started, 1e-9)
    rate = s["units"] / elapsed * unit["rate_per_s"] if s["units"] else 0.0
    work = ""
    if unit.get("work") and s.get("meta", {}).get("work_total"):
        work = f"  {unit['work']} {s.get('work', 0):.0f}/{s['meta']['work_total']:.0f}"
    finished = s["done"] + s["failed"] + s["skipped"] + s["cancelled"]
    open_jobs = s["total"] - finished
    eta = ""
    if open_jobs and s["done"] and s.get("started_s"):
        eta = f"  ETA {time.strftime('%H:%M:%S', time.gmtime(elapsed / s['done'] * open_jobs))}"
    stage = f"  [{s['stage']}]" if s.get("stage") and s["running"] and not s.get("ended_s") else ""
    return (
        f"done {s['done']}  failed {s['failed']}  skipped {s['skipped']}  running {s['running']}  "
        f"{units_text(s)}{work}  {rate:.1f} {unit['rate']}{eta}{stage}"
    )


REDIS_PATIENCE_S = 300.0
LOST_RECORD = (
    "batch {batch_id}: its record is gone from Redis (restarted without persistence, flushed, or expired); "
    "submit the same command again: jobs whose outputs are already written are skipped"
)


def follow(
    get_summary: Callable[[], dict[str, Any] | None],
    batch_id: str,
    poll_s: float = 0.5,
    console: Console | None = None,
    stalled: Callable[[dict[str, Any]], None] | None = None,
    stall_s: float = 30.0,
) -> dict[str, Any]:
    """Show a live progress bar until the batch ends; works for any batch, started anywhere.

    A batch that cannot end is said so, not waited for: its record lost (``click.ClickException``), or
    what ``stalled(summary)`` finds (it raises) once nothing has moved for ``stall_s``."""
    console = console or Console(stderr=True)
    columns = (
        TextColumn(f"[bold]{batch_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("", total=None)
        last, moved = None, time.monotonic()
        away: float | None = None
        while True:
            try:
                s = get_summary()
            except RedisError as exc:  # a Redis restart: wait for it (workers do too), say so, give up after 5 min
                away = away or time.monotonic()
                if time.monotonic() - away > REDIS_PATIENCE_S:
                    raise click.ClickException(f"Redis unreachable for {REDIS_PATIENCE_S:.0f} s: {exc}") from None
                bar.update(task, description=f"Redis unreachable ({exc}); trying again")
                time.sleep(2)
                continue
            away = None
            if s is None:
                raise click.ClickException(LOST_RECORD.format(batch_id=batch_id))
            finished = s["done"] + s["failed"] + s["skipped"] + s["cancelled"]
            bar.update(task, total=s["total"], completed=finished, description=describe(s, time.time()))
            if s.get("ended_s"):
                return s
            state = (finished, s["running"], s["units"], s.get("work"), s.get("stage"))
            if state != last:
                last, moved = state, time.monotonic()
            elif stalled is not None and time.monotonic() - moved > stall_s:
                with contextlib.suppress(RedisError):  # asked again at the next stall
                    stalled(s)
                moved = time.monotonic()
            time.sleep(poll_s)
