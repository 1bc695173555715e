"""``ovbatch quantize``: one quantization job, or an overnight plan of them."""

from __future__ import annotations

from pathlib import Path

import click

from ovbatch import kinds
from ovbatch.cli.batch import submit_batch
from ovbatch.cli.helpers import clean_errors, settings_of, wait_or_local
from ovbatch.registry.registry import Registry
from ovbatch.submission import Plan


def _params(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r}: use OPTION=VALUE, e.g. ratio=0.8", param_hint="--param")
        out[key.strip()] = text.strip()
    return out


@click.command()
@click.argument("model", required=False)
@click.option("--recipe", default=None, help="Recipe name (see below).")
@click.option("--param", "params", multiple=True, help="A recipe option, OPTION=VALUE (repeatable).")
@click.option(
    "--calibration", multiple=True, help="Calibration set source (repeatable): folder, files, archive, s3://, @list."
)
@click.option("--eval", "evals", multiple=True, help="Evaluation set source (repeatable); with references or without.")
@click.option(
    "--max-drop", type=float, default=None, help="Largest accepted loss in the gate's metric (recipe default)."
)
@click.option(
    "--language",
    default="auto",
    show_default=True,
    help="Whisper sets: their language code, or auto to detect per file.",
)
@click.option("--target", default=None, help="Registry name for the new version (default: the parent's name).")
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A TOML, YAML or JSON plan: models x recipes x options, each a job.",
)
@click.option("--out", default=None, help="Where reports go (default: quantize-reports/ in the registry's storage).")
@click.option(
    "--device", default="CPU", show_default=True, help="OpenVINO device whose quantization workers take the jobs."
)
@wait_or_local
@click.pass_context
@clean_errors
def quantize(
    ctx: click.Context,
    model: str | None,
    recipe: str | None,
    params: tuple[str, ...],
    calibration: tuple[str, ...],
    evals: tuple[str, ...],
    max_drop: float | None,
    language: str,
    target: str | None,
    plan_file: Path | None,
    out: str | None,
    device: str,
    wait: bool,
    local: bool,
) -> None:
    """Quantize MODEL[@V] with NNCF on a quantization worker; register the result as a new encrypted
    version only if its accuracy gate passes.

    \b
    Whisper: int8-hybrid (needs --calibration), int8-weights, int4-weights, int8-full
    LCM/SD:  int8-hybrid (needs --calibration prompts), int8-weights (prompts for the image gate)
    any IR:  int8 (needs --calibration .npz), int8-weights, int4-weights, int8-accuracy
    Workers: `ovbatch worker --kinds quantize` (a queue of its own, one job at a time).
    """
    from ovbatch.tasks.quantize.submit import Entry, plan, read_plan

    settings = settings_of(ctx)
    if plan_file is not None:
        if model or recipe or params or calibration or evals or max_drop is not None or target:
            raise click.UsageError("--plan gives everything: leave out MODEL, --recipe, --param and the sets")
        entries = read_plan(plan_file, device)
    else:
        if not model or not recipe:
            raise click.UsageError("give MODEL and --recipe, or --plan FILE")
        from ovbatch.tasks.quantize.submit import _language

        lang = _language(language, "--language")
        entries = [
            Entry(
                model, recipe, _params(params), list(calibration), list(evals), max_drop, target, device, language=lang
            )
        ]
    kind = kinds.get("quantize")
    out_url = out or settings.storage_url.rstrip("/") + "/quantize-reports/"

    def planner(batch_id: str, registry: Registry, out_url: str) -> Plan:
        return plan(
            entries,
            batch_id=batch_id,
            registry=registry,
            out_url=out_url,
            s3_endpoint_url=settings.s3_endpoint_url,
            progress=lambda msg: click.echo(msg, err=True),
        )

    submit_batch(ctx, kind, planner, out=out_url, device=device, wait=wait, local=local)
