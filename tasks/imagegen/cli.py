"""``ovbatch txt2img``: a file of prompts (or inline prompts) -> reproducible images, one job each."""

from __future__ import annotations

from typing import Any

import click

from ovbatch import kinds
from ovbatch.cli.batch import submit_batch
from ovbatch.cli.helpers import clean_errors, overwrite_option, settings_of, wait_or_local
from ovbatch.errors import InputError
from ovbatch.registry.registry import Registry
from ovbatch.submission import Plan


def _given(
    negative_prompt: str | None,
    seeds: str | None,
    images_per_prompt: int | None,
    steps: int | None,
    guidance: float | None,
    width: int | None,
    height: int | None,
    loras: tuple[str, ...],
    scheduler: str | None,
) -> dict[str, Any]:
    """The options given on the command line (None: the model family's default)."""
    from ovbatch.tasks.imagegen.prompts import cli_seeds, parse_lora, parse_scheduler

    try:
        return {
            "negative_prompt": negative_prompt,
            "seeds": cli_seeds(seeds, images_per_prompt),
            "steps": steps,
            "guidance": guidance,
            "width": width,
            "height": height,
            "loras": tuple(parse_lora(text) for text in loras) or None,
            "scheduler": parse_scheduler(scheduler) if scheduler else None,
        }
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.argument("prompts", nargs=-1, required=True)
@click.option("--model", required=True, help="Registry model (Stable Diffusion or LCM), NAME or NAME@VERSION.")
@click.option("--out", required=True, help="Where images go: s3://bucket/prefix/, file:///dir or a local dir.")
@click.option("--negative-prompt", default=None, help="What to keep out of the image (Stable Diffusion).")
@click.option("--seeds", default=None, help="Seeds per prompt, e.g. 0-99 or 1,5,9 (default 0).")
@click.option("--images-per-prompt", type=int, default=None, help="Seeds 0..N-1 (instead of --seeds).")
@click.option("--steps", type=int, default=None, help="Denoising steps (default: LCM 4, Stable Diffusion 20).")
@click.option("--guidance", type=float, default=None, help="Guidance scale (default: LCM 8, Stable Diffusion 7.5).")
@click.option("--width", type=int, default=None, help="Multiple of 8 (default 512).")
@click.option("--height", type=int, default=None, help="Multiple of 8 (default 512).")
@click.option("--lora", "loras", multiple=True, help="LoRA adapter from the registry: NAME[@V][:ALPHA]; repeatable.")
@click.option("--scheduler", default=None, help="Sampler (default: the model's own).")
@click.option("--device", default="CPU", show_default=True, help="OpenVINO device whose queue gets the jobs.")
@overwrite_option
@wait_or_local
@click.pass_context
@clean_errors
def txt2img(
    ctx: click.Context,
    prompts: tuple[str, ...],
    model: str,
    out: str,
    negative_prompt: str | None,
    seeds: str | None,
    images_per_prompt: int | None,
    steps: int | None,
    guidance: float | None,
    width: int | None,
    height: int | None,
    loras: tuple[str, ...],
    scheduler: str | None,
    device: str,
    overwrite: bool,
    wait: bool,
    local: bool,
) -> None:
    """Generate images for PROMPTS: inline prompts, .txt files (one per line), or .jsonl/.csv files whose
    rows set prompt, negative_prompt, seeds, steps, guidance, width, height, loras, scheduler."""
    from ovbatch.tasks.imagegen.submit import plan

    settings = settings_of(ctx)
    given = _given(negative_prompt, seeds, images_per_prompt, steps, guidance, width, height, loras, scheduler)
    kind = kinds.get("txt2img")

    def planner(batch_id: str, registry: Registry, out_url: str) -> Plan:
        return plan(
            list(prompts),
            batch_id=batch_id,
            registry=registry,
            out_url=out_url,
            model=model,
            device=device,
            given=given,
            max_side=settings.max_image_side,
            check_model=kind.check_model,
        )

    submit_batch(ctx, kind, planner, out=out, device=device, wait=wait, local=local, overwrite=overwrite)
