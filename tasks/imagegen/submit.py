"""How a txt2img submission expands into jobs: prompt rows x seeds -> one job per image.

Each job's id hashes the model's content digest, the adapters with their alphas, every generation
parameter, the seed and the destination (spec.image_job_id): resubmitting makes only missing images.
A bad row (or a row naming an unknown LoRA) fails alone, naming its file and row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ovbatch.errors import InputError, OvbatchError
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.submission import Failure, Plan
from ovbatch.tasks.imagegen.prompts import PromptDefaults, PromptRow, check_for_model, image_stem, read_prompts
from ovbatch.tasks.imagegen.spec import ImageJob, LoraSpec, image_job_id
from ovbatch.workers.cache import content_digest

# what a row gets when neither it nor the command line says: the model family's usual settings
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "lcm": {"steps": 4, "guidance": 8.0},
    "stable-diffusion": {"steps": 20, "guidance": 7.5},
}


@dataclass(frozen=True)
class Model:
    ref: str
    digest: str
    kind: str
    manifest: dict[str, Any]


def resolve(registry: Registry, text: str) -> Model:
    ref = registry.resolve(ModelRef.parse(text))
    manifest = registry.manifest(ref, verify_mac=False)  # the worker verifies; the submitter may lack keys
    return Model(str(ref), content_digest(manifest), str(manifest.get("kind", "generic")), manifest)


def defaults_for(model_kind: str, given: dict[str, Any]) -> PromptDefaults:
    """The command line's options over the model family's defaults (None: not given)."""
    chosen = {**MODEL_DEFAULTS.get(model_kind, {}), **{k: v for k, v in given.items() if v is not None}}
    return replace(PromptDefaults(), **chosen)


def plan(
    sources: list[str],
    *,
    batch_id: str,
    registry: Registry,
    out_url: str,
    model: str,
    device: str,
    given: dict[str, Any],
    max_side: int,
    check_model: Callable[[dict[str, Any]], None],
) -> Plan:
    base = resolve(registry, model)
    check_model(base.manifest)
    rows, problems = read_prompts(sources, defaults_for(base.kind, given))
    result = Plan(failures=[Failure(p.source, p.reason) for p in problems])
    loras: dict[str, Model | OvbatchError] = {}
    for row in rows:
        try:
            adapters = _adapters(registry, row, loras)
        except OvbatchError as exc:
            result.failures.append(Failure(row.source, f"{row.source}: {exc}"))
            continue
        reason = check_for_model(row, max_side) or _family_reason(row, base.kind)
        if reason is not None:
            result.failures.append(Failure(row.source, reason))
            continue
        for seed in row.seeds:
            job = _job(row, seed, adapters, base, batch_id=batch_id, out_url=out_url, device=device)
            result.jobs.append(job)
            result.work[job.job_id] = float(job.steps)
    result.meta = {"model": base.ref, "model_kind": base.kind, "device": device, "sources": sources}
    return result


def _family_reason(row: PromptRow, model_kind: str) -> str | None:
    """What the model family cannot do with this row, said before a worker would refuse it."""
    if model_kind == "lcm" and row.negative_prompt:
        return (
            f"{row.source}: an LCM model has no negative prompt (it runs without classifier-free guidance); "
            "remove it or use a Stable Diffusion model"
        )
    if model_kind == "lcm" and row.scheduler not in (None, "LCM"):
        return f"{row.source}: an LCM model runs with the LCM scheduler only, not {row.scheduler}"
    if row.negative_prompt and row.guidance <= 1.0:
        return f"{row.source}: a negative prompt needs guidance above 1 (it has {row.guidance:g})"
    return None


def _adapters(registry: Registry, row: PromptRow, seen: dict[str, Model | OvbatchError]) -> tuple[LoraSpec, ...]:
    specs = []
    for use in row.loras:
        if use.ref not in seen:
            try:
                seen[use.ref] = resolve(registry, use.ref)
            except OvbatchError as exc:
                seen[use.ref] = exc
        found = seen[use.ref]
        if isinstance(found, OvbatchError):
            raise found
        if found.kind != "lora":
            raise InputError(f"--lora {use.ref}: {found.ref} is a {found.kind!r} model, not a LoRA adapter")
        specs.append(LoraSpec(found.ref, found.digest, use.alpha))
    return tuple(specs)


def _job(
    row: PromptRow, seed: int, loras: tuple[LoraSpec, ...], base: Model, *, batch_id: str, out_url: str, device: str
) -> ImageJob:
    relpath = f"{image_stem(row.row, seed, row.prompt)}.png"
    params: dict[str, Any] = {
        "prompt": row.prompt,
        "negative_prompt": row.negative_prompt,
        "seed": seed,
        "steps": row.steps,
        "guidance": row.guidance,
        "width": row.width,
        "height": row.height,
        "scheduler": row.scheduler,
    }
    job_id = image_job_id(model_digest=base.digest, loras=loras, out_url=out_url, relpath=relpath, **params)
    return ImageJob(
        batch_id=batch_id,
        job_id=job_id,
        display=f"{row.source} seed {seed}",
        relpath=relpath,
        model=base.ref,
        device=device,
        out_url=out_url,
        row=row.row,
        source=row.source,
        model_digest=base.digest,
        loras=loras,
        **params,
    )
