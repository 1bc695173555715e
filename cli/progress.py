"""Live batch progress: files done and failed, audio-seconds processed, throughput, ETA."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def describe(s: dict[str, Any], now: float) -> str:
    started = s.get("started_s") or now
    elapsed = max((s.get("ended_s") or now) - started, 1e-9)
    rtfx = s["audio_s"] / elapsed if s["audio_s"] else 0.0
    finished = s["done"] + s["failed"] + s["skipped"] + s["cancelled"]
    open_jobs = s["total"] - finished
    eta = ""
    if open_jobs and s["done"] and s.get("started_s"):
        eta = f"  ETA {time.strftime('%H:%M:%S', time.gmtime(elapsed / s['done'] * open_jobs))}"
    return (
        f"done {s['done']}  failed {s['failed']}  skipped {s['skipped']}  running {s['running']}  "
        f"audio {s['audio_s']:.0f} s  {rtfx:.1f}x real time{eta}"
    )


def follow(
    get_summary: Callable[[], dict[str, Any] | None], batch_id: str, poll_s: float = 0.5, console: Console | None = None
) -> dict[str, Any]:
    """Show a live progress bar until the batch ends; works for any batch, started anywhere."""
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
        while True:
            s = get_summary()
            if s is None:
                raise KeyError(batch_id)
            finished = s["done"] + s["failed"] + s["skipped"] + s["cancelled"]
            bar.update(task, total=s["total"], completed=finished, description=describe(s, time.time()))
            if s.get("ended_s"):
                return s
            time.sleep(poll_s)
