"""``ovbatch benchmark``: benchmark_app's figures for registry models on a worker's device; sweeps;
``ovbatch benchmark compare`` for tables and plots across runs, batches, versions and machines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ovbatch import kinds
from ovbatch.cli.batch import submit_batch
from ovbatch.cli.helpers import clean_errors, settings_of, wait_or_local
from ovbatch.errors import BadInputError
from ovbatch.registry.registry import Registry
from ovbatch.submission import Plan


def _percentiles(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r}: use whole numbers 1..100, e.g. 50,90,99") from None
    if not values or not all(1 <= v <= 100 for v in values) or len(values) > 10:
        raise click.BadParameter(f"{text!r}: one to ten whole numbers 1..100, e.g. 50,90,99")
    return values


class _WithCompare(click.Command):
    """``ovbatch benchmark compare ...`` goes to the compare command; anything else is a benchmark."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args[:1] == ["compare"]:
            ctx.meta["ovbatch.compare"] = args[1:]
            return super().parse_args(ctx, [])
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        rest = ctx.meta.pop("ovbatch.compare", None)
        if rest is not None:
            # a child of ``ovbatch`` named "benchmark compare": its usage line has no [MODEL] in it
            with compare.make_context("benchmark compare", rest, parent=ctx.parent or ctx) as sub:
                return compare.invoke(sub)
        return super().invoke(ctx)


@click.command(cls=_WithCompare)
@click.argument("model", required=False)
@click.option("--out", default=None, help="Where run JSONs, CSVs, plots and index.html go (URL or folder).")
@click.option("--part", default=None, help="Which IR of the version (e.g. encoder): needed when it holds several.")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device whose workers run it.")
@click.option(
    "--hint",
    type=click.Choice(["latency", "throughput", "cumulative_throughput", "none"]),
    default="throughput",
    show_default=True,
)
@click.option("--nireq", type=int, default=None, help="Infer requests (default: the device's optimal number).")
@click.option("--nstreams", type=int, default=None, help="Execution streams (default: from the hint).")
@click.option("--batch", type=int, default=None, help="Batch size: the first dimension of every input.")
@click.option("--shape", default=None, help="Model shape, benchmark_app syntax: [1,3,224,224] or name[1,80,3000],...")
@click.option("--data-shape", default=None, help="Shape of the random data for dynamic inputs, same syntax.")
@click.option("--time", "time_s", type=float, default=None, help="Seconds to measure (default 60, as benchmark_app).")
@click.option("--niter", type=int, default=None, help="Iterations to measure instead of a time.")
@click.option("--infer-precision", type=click.Choice(["f32", "bf16", "f16"]), default=None)
@click.option(
    "--api",
    type=click.Choice(["sync", "async"]),
    default=None,
    help="Default: sync for --hint latency with one request, else async.",
)
@click.option("--percentiles", default="50,90,99", show_default=True, help="Latency percentiles to report.")
@click.option("--counters", is_flag=True, help="Per-node performance counters (the slowest nodes).")
@click.option("--repeat", type=click.IntRange(1, 100), default=1, show_default=True, help="Runs per configuration.")
@click.option(
    "--sweep",
    default=None,
    help='A matrix: "device=CPU,GPU hint=latency,throughput nireq=1,2,4 precision=bf16,f32 model=m@1,m@2".',
)
@click.option(
    "--pipeline",
    "pipeline_sources",
    multiple=True,
    help="Measure the model's whole job-kind pipeline on these inputs instead of one IR: audio "
    "(files, folders, archives, s3:// prefixes, manifests) for Whisper, prompt files for LCM / Stable Diffusion.",
)
@click.option(
    "--warmup",
    type=click.IntRange(0, 10),
    default=1,
    show_default=True,
    help="--pipeline: inputs run first and not counted.",
)
@click.option("--language", default=None, help="--pipeline with Whisper: the language (default: detect).")
@wait_or_local
@click.pass_context
@clean_errors
def benchmark(
    ctx: click.Context,
    model: str | None,
    out: str | None,
    part: str | None,
    device: str,
    hint: str,
    nireq: int | None,
    nstreams: int | None,
    batch: int | None,
    shape: str | None,
    data_shape: str | None,
    time_s: float | None,
    niter: int | None,
    infer_precision: str | None,
    api: str | None,
    percentiles: str,
    counters: bool,
    repeat: int,
    sweep: str | None,
    pipeline_sources: tuple[str, ...],
    warmup: int,
    language: str | None,
    wait: bool,
    local: bool,
) -> None:
    """Measure MODEL[@V] as OpenVINO's benchmark_app does, on a worker of --device: throughput,
    latency percentiles, compile and first-inference time, peak memory; one JSON per run
    (benchmark_app's -json_stats keys too) and benchmark_report.csv beside it.

    \b
    A run has its worker to itself: the worker finishes its running jobs first.
    With --sweep the cartesian matrix runs as one batch, with runs.csv, plots and index.html
    under OUT/<batch>/.  `ovbatch benchmark compare RUN_OR_BATCH...` compares runs.

    \b
    With --pipeline SRC the model's whole pipeline runs on real inputs, stage by stage:
    Whisper: RTFx, encoder ms per 30 s window, decoder ms per token;
    LCM / Stable Diffusion: s per image, text encoder, first and other UNet steps, VAE decode.
    OUT/<run>.json, OUT/<run>/pipeline_report.csv (llm_bench's columns), OUT/<batch>/index.html.
    """
    from ovbatch.tasks.benchmark.submit import Request, expand, plan

    if not model and not (sweep and "model=" in sweep):
        raise click.UsageError("give MODEL[@V] (or model=... in --sweep), or `ovbatch benchmark compare RUN...`")
    if not out:
        raise click.UsageError("give --out: a folder or URL for the run reports")
    if pipeline_sources:
        given = {
            "--part": part,
            "--nireq": nireq,
            "--nstreams": nstreams,
            "--batch": batch,
            "--shape": shape,
            "--data-shape": data_shape,
            "--time": time_s,
            "--niter": niter,
            "--infer-precision": infer_precision,
            "--api": api,
            "--counters": counters or None,
            "--hint": None if hint == "throughput" else hint,
        }
        clash = [name for name, value in given.items() if value is not None]
        if clash:
            raise click.UsageError(
                f"{', '.join(clash)}: benchmark_app settings of one IR; a --pipeline run measures the whole "
                "pipeline as its job kind runs it"
            )
        _pipeline(ctx, model or "", device, out, list(pipeline_sources), sweep, repeat, warmup, language, wait, local)
        return
    if time_s is not None and niter is not None:
        raise click.UsageError("give --time or --niter, not both")
    settings = settings_of(ctx)
    base = Request(
        model=model or "",
        part=part,
        device=device,
        hint=hint,
        nireq=nireq,
        nstreams=nstreams,
        batch=batch,
        shape=shape,
        data_shape=data_shape,
        time_s=time_s,
        niter=niter,
        infer_precision=infer_precision,
        api=api,
        percentiles=_percentiles(percentiles),
        counters=counters,
    )
    requests = expand(base, sweep)
    workers = _live_workers(settings) if not local else None

    def planner(batch_id: str, registry: Registry, out_url: str) -> Plan:
        result = plan(requests, batch_id=batch_id, registry=registry, out_url=out_url, repeat=repeat, workers=workers)
        if not result.jobs and len(requests) == 1 and result.failures:
            raise BadInputError(result.failures[0].error)  # one configuration: say why, queue nothing
        return result

    devices = sorted({r.device for r in requests})
    if local and len(devices) > 1:
        raise click.UsageError(f"--local runs on this machine's one device; the sweep names {', '.join(devices)}")
    kind = kinds.get("benchmark")
    submit_batch(ctx, kind, planner, out=out, device=",".join(devices), wait=wait, local=local)


def _pipeline(
    ctx: click.Context,
    model: str,
    device: str,
    out: str,
    sources: list[str],
    sweep: str | None,
    repeat: int,
    warmup: int,
    language: str | None,
    wait: bool,
    local: bool,
) -> None:
    from ovbatch.tasks.pipebench.submit import expand, plan
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    settings = settings_of(ctx)
    configs = expand(model, device, sweep)
    workers = _live_workers(settings) if not local else None
    options = TranscribeOptions(language=language)

    def planner(batch_id: str, registry: Registry, out_url: str) -> Plan:
        result = plan(
            configs,
            sources,
            batch_id=batch_id,
            registry=registry,
            out_url=out_url,
            repeat=repeat,
            warmup=warmup,
            options=options,
            workers=workers,
            s3_endpoint_url=settings.s3_endpoint_url,
        )
        if not result.jobs and len(configs) == 1 and result.failures:
            raise BadInputError(result.failures[0].error)  # nothing can run: say why, queue nothing
        return result

    devices = sorted({c.device for c in configs})
    if local and len(devices) > 1:
        raise click.UsageError(f"--local runs on this machine's one device; the sweep names {', '.join(devices)}")
    submit_batch(ctx, kinds.get("pipeline"), planner, out=out, device=",".join(devices), wait=wait, local=local)


def _live_workers(settings: Any) -> list[dict[str, Any]] | None:
    """The workers advertised in Redis; None when Redis is unreachable (the run is embedded)."""
    from ovbatch.cli.batch import redis_client
    from ovbatch.workers.presence import live_workers

    client = redis_client(settings, required=False)
    return live_workers(client) if client is not None else None


@click.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("benchmark-compare"),
    show_default=True,
    help="Folder for runs.csv, the plots and index.html.",
)
@click.pass_context
@clean_errors
def compare(ctx: click.Context, sources: tuple[str, ...], out_dir: Path) -> None:
    """Compare runs side by side: SOURCES are run JSON files, folders or URLs holding them, or batch
    ids. Prints configurations with their spread and the ratio to the first, and writes the plots."""
    from ovbatch.storage import open_store
    from ovbatch.tasks.benchmark import plots

    settings = settings_of(ctx)
    runs: list[dict[str, Any]] = []
    for source in sources:
        found = _runs_from(ctx, settings, source)
        if not found:
            raise click.ClickException(f"{source}: no benchmark runs there")
        runs += found
    out_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(out_dir.resolve().as_uri() + "/")
    plots.write_all(runs, store, f"ovbatch benchmark compare: {' '.join(sources)}")
    grouped = plots.groups(runs)
    first = None
    click.echo(
        f"{'configuration':<60} {'runs':>4} {'fps':>10} {'spread':>8} {'ratio':>7} {'median ms':>10} {'ratio':>7}"
    )
    for name, group in grouped.items():
        s = plots.spread(group)
        first = first or s
        click.echo(
            f"{name[:60]:<60} {s['runs']:>4} {s['throughput_fps']:>10.2f} {s['throughput_spread_pct']:>7.1f}% "
            f"{s['throughput_fps'] / first['throughput_fps']:>6.2f}x {s['latency_median_ms']:>10.2f} "
            f"{s['latency_median_ms'] / first['latency_median_ms']:>6.2f}x"
        )
    failed = [r for r in runs if r.get("status", "done") != "done"]
    for r in failed:
        click.echo(f"  FAILED {r.get('run_id')}: {r.get('error')}", err=True)
    click.echo(f"runs.csv, throughput.png, latency.png, latency_distribution.png and index.html in {out_dir}")


def _runs_from(ctx: click.Context, settings: Any, source: str) -> list[dict[str, Any]]:
    """Runs named by a JSON file, a folder or URL of run JSONs, or a batch id known to Redis."""
    from ovbatch.storage import open_store

    path = Path(source)
    if path.is_file():
        return [_run_json(path.read_bytes(), source)]
    if path.is_dir() or source.startswith(("s3://", "file://")):
        url = source if source.startswith(("s3://", "file://")) else path.resolve().as_uri()
        store = open_store(url.rstrip("/") + "/", s3_endpoint_url=settings.s3_endpoint_url)
        runs = []
        for key in store.list(""):
            if key.endswith(".json") and "/" not in key and not key.startswith("batch-"):
                data = json.loads(store.get_bytes(key))
                if isinstance(data, dict) and "run_id" in data and "config" in data:
                    runs.append(data)
        return runs
    if "/" in source or source.endswith(".json"):
        raise click.ClickException(f"{source}: no such run file or folder")
    from ovbatch.cli.batch import batch_store, summary_or_fail
    from ovbatch.tasks.benchmark.batch import load_runs

    batches = batch_store(ctx)
    summary = summary_or_fail(batches, source)
    if summary["meta"].get("kind") != "benchmark":
        raise click.ClickException(f"batch {source} is a {summary['meta'].get('kind')} batch, not a benchmark")
    out = open_store(summary["meta"]["out"], s3_endpoint_url=settings.s3_endpoint_url)
    return load_runs(batches, source, out)


def _run_json(data: bytes, source: str) -> dict[str, Any]:
    try:
        run = json.loads(data)
    except ValueError as exc:
        raise click.ClickException(f"{source}: not JSON ({exc})") from None
    if not isinstance(run, dict) or "run_id" not in run or "config" not in run:
        raise click.ClickException(f"{source}: not an ovbatch benchmark run")
    return run
