"""How a quantization submission expands into jobs: one (model, recipe, options) or a plan file.

A plan (TOML, YAML or JSON) lists entries; each entry is ``models`` x ``recipes`` x every
combination of its ``params`` lists (a sweep), with its datasets and gate::

    device = "CPU"                        # optional: the default for every entry
    [[jobs]]
    models = ["whisper-base@1"]
    recipes = ["int8-hybrid", "int8-weights"]
    calibration = ["audio/calib/"]        # sources, as `ovbatch transcribe` takes them
    eval = ["audio/eval/", "audio/long/"]
    max_drop = 0.5                        # optional: the recipe's default
    target = "whisper-base"               # optional: the registry name of the results
    params = { smooth_quant_alpha = [0.5, 0.6] }   # applied to the recipes that have the option

Every job's id hashes the parent's content, recipe, options, datasets, gate and destination, so
resubmitting a plan reruns only the jobs that are missing or failed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovbatch.errors import BadInputError, InputError, ModelNotFound
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.submission import Failure, Plan
from ovbatch.tasks.quantize import datasets, recipes
from ovbatch.tasks.quantize.spec import DatasetRef, QuantizeJob, job_id_for
from ovbatch.workers.cache import content_digest

ENTRY_KEYS = {
    "models",
    "model",
    "recipes",
    "recipe",
    "calibration",
    "eval",
    "max_drop",
    "target",
    "params",
    "device",
    "language",
}


@dataclass
class Entry:
    model: str
    recipe: str
    params: dict[str, Any] = field(default_factory=dict)
    calibration: list[str] = field(default_factory=list)
    eval: list[str] = field(default_factory=list)
    max_drop: float | None = None
    target: str | None = None
    device: str = "CPU"
    where: str = "command line"
    language: str | None = None


def read_plan(path: Path, device: str) -> list[Entry]:
    """The plan's entries, expanded (models x recipes x option combinations)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"plan {path}: cannot read it ({exc})") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise BadInputError(f"plan {path}: use a .toml, .yaml or .json file")
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"plan {path}: not valid {path.suffix[1:].upper()} ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list) or not data["jobs"]:
        raise BadInputError(f"plan {path}: needs a non-empty list `jobs` of entries (see `ovbatch quantize --help`)")
    device = str(data.get("device", device))
    base = path.parent
    out: list[Entry] = []
    for number, raw in enumerate(data["jobs"], 1):
        where = f"plan {path} entry {number}"
        if not isinstance(raw, dict):
            raise BadInputError(f"{where}: must be a table/object")
        unknown = set(raw) - ENTRY_KEYS
        if unknown:
            raise BadInputError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))} (keys: {', '.join(sorted(ENTRY_KEYS))})"
            )
        models = _strings(raw.get("models", raw.get("model")), where, "models")
        names = _strings(raw.get("recipes", raw.get("recipe")), where, "recipes")
        params = raw.get("params") or {}
        if not isinstance(params, dict):
            raise BadInputError(f"{where}: params must be a table of option = value or [values]")
        sweep = {k: v if isinstance(v, list) else [v] for k, v in params.items()}
        for model, recipe_name in itertools.product(models, names):
            out += [
                Entry(
                    model,
                    recipe_name,
                    dict(combo),
                    _paths(raw.get("calibration"), base, where),
                    _paths(raw.get("eval"), base, where),
                    None if raw.get("max_drop") is None else float(raw["max_drop"]),
                    raw.get("target"),
                    str(raw.get("device", device)),
                    where,
                    _language(raw.get("language"), where),
                )
                for combo in _combinations(sweep)
            ]
    return out


def _language(value: Any, where: str) -> str | None:
    if value is None or str(value).lower() == "auto":
        return None
    if not isinstance(value, str) or not value.isalpha() or not 2 <= len(value) <= 8:
        raise BadInputError(f"{where}: language must be a Whisper code such as en, or auto")
    return value.lower()


def _strings(value: Any, where: str, key: str) -> list[str]:
    values = [value] if isinstance(value, str) else value
    if not values or not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise BadInputError(f"{where}: `{key}` must be a name or a list of names")
    return list(values)


def _paths(value: Any, base: Path, where: str) -> list[str]:
    if value is None:
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise BadInputError(f"{where}: sets are a source or a list of sources")
    return [v if v.startswith(("s3://", "file://")) or Path(v).is_absolute() else str(base / v) for v in values]


def _combinations(sweep: dict[str, list[Any]]) -> list[list[tuple[str, Any]]]:
    keys = sorted(sweep)
    return [list(zip(keys, values, strict=True)) for values in itertools.product(*(sweep[k] for k in keys))] or [[]]


def plan(
    entries: list[Entry],
    *,
    batch_id: str,
    registry: Registry,
    out_url: str,
    s3_endpoint_url: str | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Plan:
    """One job per entry; a bad entry (unknown model or recipe, bad option, unreadable set) fails alone."""
    result = Plan()
    sets: dict[tuple[str, tuple[str, ...]], DatasetRef] = {}  # one upload per set, shared by entries
    seen: set[str] = set()
    for entry in entries:
        display = f"{entry.model} {entry.recipe}"
        try:
            job = _job(entry, batch_id, registry, out_url, s3_endpoint_url, sets, progress)
        except (InputError, ModelNotFound) as exc:
            result.failures.append(Failure(display, f"{display} ({entry.where}): {exc}"))
            continue
        if job.job_id in seen:  # the same job twice in one plan
            continue
        seen.add(job.job_id)
        result.jobs.append(job)
        work = (job.calibration.items if job.calibration else 0) + 2 * (
            job.evaluation.items if job.evaluation else job.calibration.items if job.calibration else 0
        )
        result.work[job.job_id] = float(work)
    result.meta = {"entries": len(entries), "models": sorted({j.model for j in result.jobs})}
    return result


def _job(
    entry: Entry,
    batch_id: str,
    registry: Registry,
    out_url: str,
    s3_endpoint_url: str | None,
    sets: dict[tuple[str, tuple[str, ...]], DatasetRef],
    progress: Callable[[str], None],
) -> QuantizeJob:
    ref = registry.resolve(ModelRef.parse(entry.model))
    manifest = registry.manifest(ref, verify_mac=False)
    model_kind = str(manifest.get("kind", "generic"))
    recipe = recipes.get(model_kind, entry.recipe)
    params = recipes.params_for(recipe, entry.params)
    set_kind = recipes.DATASETS[recipe.family]

    def dataset(sources: list[str]) -> DatasetRef | None:
        if not sources:
            return None
        key = (set_kind, tuple(sources))
        if key not in sets:
            progress(f"uploading {set_kind} set {', '.join(sources)}")
            sets[key] = datasets.build(set_kind, sources, registry.store, s3_endpoint_url)
        return sets[key]

    calibration, evaluation = dataset(entry.calibration), dataset(entry.eval)
    if recipe.calibration == "required" and calibration is None:
        raise BadInputError(f"recipe {recipe.name} calibrates on data: give --calibration")
    if recipe.family == "whisper" and calibration is None and evaluation is None:
        raise BadInputError("a Whisper gate needs audio: give --eval (audio with or without .txt references)")
    if recipe.family == "diffusion" and calibration is None and evaluation is None:
        raise BadInputError("a diffusion gate compares images made from prompts: give --eval PROMPTS (file or text)")
    if recipe.calibration == "none" and calibration is not None and recipe.family == "whisper" and evaluation is None:
        evaluation, calibration = calibration, None  # weights-only: the audio is for the gate
    target = entry.target or ref.name
    relpath = f"{ref}/{recipes.slug(recipe, params)}"
    job_id = job_id_for(
        content_digest(manifest),
        recipe.name,
        params,
        calibration,
        evaluation,
        entry.max_drop,
        target,
        out_url,
        entry.language,
    )
    return QuantizeJob(
        batch_id=batch_id,
        job_id=job_id,
        display=f"{ref} {recipes.slug(recipe, params)}",
        relpath=relpath,
        model=str(ref),
        device=entry.device,
        out_url=out_url,
        model_digest=content_digest(manifest),
        model_kind=model_kind,
        recipe=recipe.name,
        params=params,
        calibration=calibration,
        evaluation=evaluation,
        max_drop=entry.max_drop,
        target=target,
        language=entry.language if recipe.family == "whisper" else None,
    )
