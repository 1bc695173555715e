"""One quantization job: decrypt the parent in memory, calibrate, quantize, evaluate both, gate,
and only then import the result as a new encrypted version with its lineage.

Outputs under ``--out``: ``<model>@<v>/<recipe slug>.json``, the report (metrics before and after,
gate, sizes, times, peak RSS, the new version or why there is none), then the marker. A failed gate
is a failed job (not retryable) with its report; nothing is registered. A worker killed before the
import leaves no version (the manifest is written last); killed after it, the rerun finds the
version by its lineage's job id and does not import a second one.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ovbatch.errors import InputError
from ovbatch.jobs import STOPS, JobEnv, Outcome, Watch, begin, read_marker, stopped, write_marker
from ovbatch.memory import PeakRss
from ovbatch.registry.loader import DecryptedVersion, decrypt_version
from ovbatch.registry.refs import ModelRef
from ovbatch.storage import ObjectStore
from ovbatch.tasks.quantize import datasets, memio, recipes
from ovbatch.tasks.quantize.spec import QuantizeJob

if TYPE_CHECKING:  # imported when a diffusion job runs: they load openvino_genai
    from ovbatch.tasks.quantize.diffusion import Capture, Generation


@dataclass
class Quantizer:
    """What the worker's cache holds per parent version (the kind's "engine"): the registry and
    device, and what a sweep over one recipe's options reuses: captured calibration inputs and the
    parent's evaluation results (NNCF statistics are never written to disk: they come from plaintext)."""

    registry: Any
    ref: ModelRef
    manifest: dict[str, Any]
    core: Any
    device: str
    config: dict[str, Any]
    # compile options for the quantized models, where they differ (Whisper: see transcribe/precision.py)
    quantized_config: dict[str, Any] | None = None
    captures: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    parent_scores: dict[tuple[Any, ...], Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Step:
    """One running quantization: what the recipe family's function needs."""

    job: QuantizeJob
    env: JobEnv
    q: Quantizer
    parent: DecryptedVersion
    recipe: str
    params: dict[str, Any]
    calib: datasets.Dataset | None
    evaluation: datasets.Dataset | None
    max_drop: float
    watch: Watch
    times: dict[str, float] = field(default_factory=dict)
    files: dict[str, bytes | memoryview] | None = None  # serialized already (a family whose gate needs the files)

    def stage(self, text: str) -> None:
        self.watch.check(text)
        self.env.stage(f"{self.job.display}: {text}")


def finished(job: QuantizeJob, store: ObjectStore) -> Outcome | None:
    return read_marker(job, store)


def _registered(registry: Any, job: QuantizeJob) -> dict[str, Any] | None:
    """A version an earlier run of this job imported (killed before its marker was written)."""
    try:
        versions = registry.versions(job.target)
    except Exception:
        return None
    for version in reversed(versions):
        manifest = registry.manifest(ModelRef(job.target, version), verify_mac=False)
        if (manifest.get("lineage") or {}).get("job_id") == job.job_id:
            return manifest
    return None


def _versions() -> dict[str, str]:
    import nncf
    import openvino as ov

    return {"nncf": nncf.__version__, "openvino": ov.get_version()}


def _bytes(version: DecryptedVersion) -> int:
    return sum(int(b.nbytes) for b in version.buffers.values())


def run(job: QuantizeJob, env: JobEnv) -> Outcome:
    out = begin(job, env, finished, "this job")
    if isinstance(out, Outcome):
        return out
    quantizer: Quantizer = env.engine_for(job)
    t0 = time.perf_counter()
    watch = env.watch(job, cancel_check_s=0.0)
    try:
        with PeakRss() as rss:
            report = _quantize(job, env, quantizer, watch)
    except STOPS as exc:
        return stopped(exc, t0, name=job.display)
    processing_s = time.perf_counter() - t0
    report["seconds"]["total"] = round(processing_s, 2)
    report["peak_rss_mib"] = round(rss.peak, 1)
    files = report.pop("_files")
    if report["gate"]["passed"]:
        report["version"] = _register(job, quantizer, report, files)
    out.put_bytes(job.report_key, json.dumps(report, indent=2, sort_keys=True).encode())
    extra = {"gate": report["gate"], "version": report.get("version")}
    if not report["gate"]["passed"]:
        return Outcome(
            "failed",
            [job.report_key],
            0.0,
            processing_s,
            error=f"{job.display}: {report['gate']['reason']}",
            extra=extra,
        )
    outcome = Outcome("done", [job.report_key], 1.0, processing_s, extra=extra)
    write_marker(out, job, outcome)
    return outcome


def _quantize(job: QuantizeJob, env: JobEnv, q: Quantizer, watch: Watch) -> dict[str, Any]:
    recipe = recipes.get(job.model_kind, job.recipe)
    params = recipes.params_for(recipe, job.params)
    max_drop = recipe.max_drop if job.max_drop is None else job.max_drop
    times: dict[str, float] = {}
    env.stage(f"{job.display}: decrypting the parent in memory")
    t = time.perf_counter()
    parent = decrypt_version(q.registry, ModelRef.parse(job.model))
    times["decrypt"] = time.perf_counter() - t
    try:
        step = Step(
            job,
            env,
            q,
            parent,
            recipe.name,
            params,
            datasets.load(env.open_input, job.calibration) if job.calibration else None,
            datasets.load(env.open_input, job.evaluation) if job.evaluation else None,
            max_drop,
            watch,
            times,
        )
        if recipe.family == "whisper":
            models, metrics = _whisper(step)
            gate = whisper_gate(metrics, max_drop)
        elif recipe.family == "diffusion":
            models, metrics = _diffusion(step)
            gate = diffusion_gate(metrics, max_drop, float(params["min_psnr_db"]))
        else:
            models, metrics = _ir(step)
            gate = ir_gate(metrics, max_drop)
        if step.files is None:
            step.stage("serializing the quantized models in memory")
            step.files = _files(parent, models)
        files = step.files
    finally:
        size_before = _bytes(parent)
        parent.wipe()
    from ovbatch.registry.sources import precision_of_xml

    report = {
        "job_id": job.job_id,
        "parent": {"ref": job.model, "digest": job.model_digest, "kind": job.model_kind},
        "recipe": recipe.name,
        "summary": recipe.summary,
        "params": params,
        "calibration": _set_info(job.calibration),
        "evaluation": _set_info(job.evaluation),
        "metrics": metrics,
        "gate": {**gate, "max_drop": max_drop},
        "size_bytes": {"before": size_before, "after": sum(len(v) for v in files.values())},
        "precision": precision_of_xml([(r, bytes(v).decode()) for r, v in files.items() if r.endswith(".xml")]),
        "seconds": {k: round(v, 2) for k, v in times.items()},
        "versions": _versions(),
        "device": q.device,
    }
    report["_files"] = files  # taken out before the report is written
    return report


def _set_info(ref: Any) -> dict[str, Any] | None:
    return {"sha256": ref.sha256, "items": ref.items, "references": ref.references} if ref else None


def _files(parent: DecryptedVersion, models: dict[str, Any]) -> dict[str, bytes | memoryview]:
    """Every file of the parent, with each quantized model's xml and bin in place of the float one."""
    files: dict[str, bytes | memoryview] = {role: parent.data(role) for role in parent.buffers}
    for role, model in models.items():
        xml, weights = memio.serialize(model)
        files[role] = xml
        files[role[:-4] + ".bin"] = weights
    # the parent's buffers are wiped after this: keep copies of the files carried over unchanged
    return {role: bytes(data) if isinstance(data, memoryview) else data for role, data in files.items()}


def _register(job: QuantizeJob, q: Quantizer, report: dict[str, Any], files: dict[str, Any]) -> str:
    found = _registered(q.registry, job)
    if found is not None:
        return f"{found['name']}@{found['version']}"
    lineage = {
        "job_id": job.job_id,
        "parent": job.model,
        "parent_digest": job.model_digest,
        "recipe": report["recipe"],
        "params": report["params"],
        "calibration_sha256": (report["calibration"] or {}).get("sha256"),
        "evaluation_sha256": (report["evaluation"] or {}).get("sha256"),
        "metrics": report["metrics"],
        "gate": report["gate"],
        "size_bytes": report["size_bytes"],
        "seconds": report["seconds"],
        "peak_rss_mib": report["peak_rss_mib"],
        **report["versions"],
    }
    parent_manifest = q.manifest
    manifest = q.registry.import_buffers(
        files,
        job.target,
        kind=parent_manifest["kind"],
        precision=report["precision"],
        source={"quantized_from": job.model, "recipe": report["recipe"]},
        extra={"lineage": lineage, **{k: parent_manifest[k] for k in ("lora",) if k in parent_manifest}},
    )
    return f"{manifest['name']}@{manifest['version']}"


# --- Whisper ----------------------------------------------------------------------------------------


def _whisper(step: Step) -> tuple[dict[str, Any], dict[str, Any]]:
    from ovbatch.tasks.quantize import whisper

    job, env, q, parent, recipe, params = step.job, step.env, step.q, step.parent, step.recipe, step.params
    calib, evaluation, stage, watch, times = step.calib, step.evaluation, step.stage, step.watch, step.times

    capture = None
    if calib is not None:
        enc_n = int(params.get("encoder_samples", 128))
        dec_n = int(params.get("decoder_samples", 300)) if recipe in ("int8-full", "int4-weights") else 0
        key = (job.calibration.sha256 if job.calibration else None, enc_n, dec_n, job.language)
        t = time.perf_counter()
        with q.lock:
            capture = q.captures.get(key)
        if capture is None:
            done = [0]

            def on_file(n: int) -> None:
                done[0] += n
                env.progress(n)
                stage(f"calibrating: {done[0]}/{len(calib.items)} files transcribed by the parent")

            stage(f"calibrating: 0/{len(calib.items)} files")
            capture = whisper.capture(
                parent, q.core, q.device, q.config, calib, env.open_input, watch, on_file, enc_n, dec_n, job.language
            )
            with q.lock:
                q.captures.clear()  # one calibration set kept per parent: a sweep reuses it
                q.captures[key] = capture
        else:
            env.progress(len(calib.items))
        times["calibrate"] = time.perf_counter() - t
    stage(f"quantizing ({recipe}: NNCF)")
    t = time.perf_counter()
    models = whisper.quantize(parent, q.core, recipe, params, capture)
    times["quantize"] = time.perf_counter() - t
    evalset = evaluation or calib
    if evalset is None:
        raise InputError("a Whisper gate needs audio: give --eval (or --calibration, used for both)")
    t = time.perf_counter()
    pkey = (
        job.evaluation.sha256 if job.evaluation else job.calibration.sha256 if job.calibration else None,
        job.language,
    )
    with q.lock:
        parent_scored = q.parent_scores.get(pkey)
    counted = [0]

    def on_eval(n: int) -> None:
        counted[0] += n
        env.progress(n)
        stage(f"evaluating: {counted[0]}/{2 * len(evalset.items)} transcriptions")

    if parent_scored is None:
        base = {r: parent.read_model(q.core, r) for r in (whisper.ENCODER, whisper.DECODER, whisper.DETOKENIZER)}
        engine = whisper.engine_for(parent, whisper.compile_all(q.core, base, q.device, q.config))
        parent_scored = whisper.score(engine, evalset, env.open_input, watch, on_eval, job.language)
        del engine
        with q.lock:
            q.parent_scores.clear()
            q.parent_scores[pkey] = parent_scored
    else:
        on_eval(len(evalset.items))
    quantized = {**models, whisper.DETOKENIZER: parent.read_model(q.core, whisper.DETOKENIZER)}
    child_config = q.config if q.quantized_config is None else q.quantized_config
    engine = whisper.engine_for(parent, whisper.compile_all(q.core, quantized, q.device, child_config))
    child = whisper.score(engine, evalset, env.open_input, watch, on_eval, job.language)
    del engine
    times["evaluate"] = time.perf_counter() - t
    metrics = whisper.gate_metrics(evalset, parent_scored, child)
    metrics["evaluated_on"] = "evaluation" if evaluation else "calibration"
    return models, metrics


def whisper_gate(metrics: dict[str, Any], max_drop: float) -> dict[str, Any]:
    over = [
        f"{g} WER {m['before']:.2f} -> {m['after']:.2f} %"
        for g in ("short", "long")
        if (m := metrics.get(g)) and m["drop"] > max_drop
    ]
    if over:
        what = "agreement with the parent" if metrics["mode"] == "agreement" else "WER"
        return {"passed": False, "reason": f"gate failed on {what}: {'; '.join(over)} (max drop {max_drop:g} points)"}
    return {"passed": True, "reason": "every group within the max drop"}


# --- any IR -----------------------------------------------------------------------------------------


def _ir(step: Step) -> tuple[dict[str, Any], dict[str, Any]]:
    from ovbatch.tasks.quantize import ir

    job, env, q, parent, recipe, params = step.job, step.env, step.q, step.parent, step.recipe, step.params
    calib, evaluation, max_drop, stage, times = step.calib, step.evaluation, step.max_drop, step.stage, step.times

    roles = parent.model_roles()
    if len(roles) != 1 and (calib is not None or evaluation is not None):
        raise InputError(
            f"{job.model} holds {len(roles)} models; .npz calibration and evaluation sets feed one model: "
            "give it without sets (weights-only recipes) or import each model on its own"
        )
    t = time.perf_counter()
    stage("reading calibration and evaluation tensors")
    base = {r: parent.read_model(q.core, r) for r in roles}
    calibration = {r: ir.samples_for(m, calib, env.open_input) for r, m in base.items()} if calib else None
    env.progress(len(calib.items) if calib else 0)
    if evaluation is not None:
        eval_samples = {r: ir.samples_for(m, evaluation, env.open_input) for r, m in base.items()}
        source = "evaluation set"
    else:
        eval_samples = {r: ir.random_samples(m) for r, m in base.items()}
        source = f"{ir.RANDOM_SAMPLES} seeded random inputs (no --eval)"
    reference = {r: ir.run_all(q.core.compile_model(m, q.device, q.config), eval_samples[r]) for r, m in base.items()}
    times["calibrate"] = time.perf_counter() - t
    stage(f"quantizing ({recipe}: NNCF)")
    t = time.perf_counter()
    models = ir.quantize(parent, q.core, recipe, params, calibration, eval_samples, reference, max_drop, q.device)
    times["quantize"] = time.perf_counter() - t
    stage("evaluating")
    t = time.perf_counter()
    per_model = {}
    for role, model in models.items():
        outputs = ir.run_all(q.core.compile_model(model, q.device, q.config), eval_samples[role])
        per_model[role] = ir.agreement(reference[role], outputs)
    times["evaluate"] = time.perf_counter() - t
    after = min(per_model.values())
    metrics = {
        "metric": "output_agreement_points",
        "evaluated_on": source,
        "samples": len(next(iter(eval_samples.values()))),
        "before": 100.0,
        "after": after,
        "drop": round(100.0 - after, 4),
        "per_model": per_model,
    }
    return models, metrics


def ir_gate(metrics: dict[str, Any], max_drop: float) -> dict[str, Any]:
    if metrics["drop"] > max_drop:
        return {
            "passed": False,
            "reason": f"gate failed: output agreement {metrics['after']:.2f} % (drop {metrics['drop']:.2f} points > "
            f"max drop {max_drop:g})",
        }
    return {"passed": True, "reason": "output agreement within the max drop"}


# --- diffusion (LCM, Stable Diffusion) -------------------------------------------------------------


def _diffusion(step: Step) -> tuple[dict[str, Any], dict[str, Any]]:
    from ovbatch.tasks.quantize import diffusion

    q, parent, params, times = step.q, step.parent, step.params, step.times
    evalset = step.evaluation or step.calib
    if evalset is None:
        raise InputError("a diffusion gate needs prompts: give --eval PROMPTS (or --calibration, used for both)")
    gen = diffusion.generation_for(parent, params)
    capture = _diffusion_capture(step, gen) if step.recipe == "int8-hybrid" else None
    if capture is None and step.calib is not None:
        step.env.progress(len(step.calib.items))  # weights only: the prompts serve the gate alone
    step.stage(f"quantizing ({step.recipe}: NNCF)")
    t = time.perf_counter()
    models = diffusion.quantize(parent, q.core, step.recipe, params, capture)
    times["quantize"] = time.perf_counter() - t
    step.stage("serializing the quantized models in memory")
    step.files = _files(parent, models)
    t = time.perf_counter()
    metrics = _diffusion_evaluate(step, gen, [i.text or "" for i in evalset.items])
    times["evaluate"] = time.perf_counter() - t
    metrics["evaluated_on"] = "evaluation" if step.evaluation else "calibration"
    metrics["generation"] = gen.as_json()
    if capture is not None:
        used = min(len(capture.unet), int(params["unet_samples"]))
        metrics["captured"] = {"unet_samples": used, "runs": capture.runs, "seconds": round(capture.seconds, 2)}
    return models, metrics


def _diffusion_capture(step: Step, gen: Generation) -> Capture:
    """UNet inputs from the parent denoising the calibration prompts; a sweep over the recipe's other
    options (or fewer ``unet_samples``) reuses them."""
    from ovbatch.tasks.quantize import diffusion

    job, env, q, calib = step.job, step.env, step.q, step.calib
    assert calib is not None and job.calibration is not None  # the recipe requires it (checked at submission)
    samples = int(step.params["unet_samples"])
    key = ("diffusion", job.calibration.sha256, gen)
    t = time.perf_counter()
    with q.lock:
        capture = q.captures.get(key)
    if capture is None or not capture.enough_for(samples):
        done = [0]

        def on_prompt(n: int) -> None:
            done[0] += n
            env.progress(n)
            step.stage(f"calibrating: {done[0]}/{len(calib.items)} prompts denoised by the parent")

        step.stage(f"calibrating: 0/{len(calib.items)} prompts ({samples} UNet samples)")
        prompts = [i.text or "" for i in calib.items]
        capture = diffusion.capture(
            step.parent, q.core, q.device, q.config, prompts, gen, samples, step.watch, on_prompt
        )
        env.progress(len(calib.items) - done[0])  # a capture that had its samples early skips the other prompts
        with q.lock:
            q.captures.clear()  # one calibration set kept per parent: a sweep reuses it
            q.captures[key] = capture
    else:
        env.progress(len(calib.items))
    step.times["calibrate"] = time.perf_counter() - t
    return capture


def _diffusion_evaluate(step: Step, gen: Generation, prompts: list[str]) -> dict[str, Any]:
    """Images of the parent (kept for a sweep) and of the quantized files, same prompts and seeds."""
    from ovbatch.tasks.imagegen.components import ROLES
    from ovbatch.tasks.quantize import imagegate

    job, env, q, parent = step.job, step.env, step.q, step.parent
    todo = imagegate.pairs(prompts, gen, int(step.params["eval_images"]))
    made, work = [0], 2 * len(prompts)  # the plan counted two runs of every prompt of the set

    def on_image(n: int) -> None:
        env.progress(max(0, min(n, work - made[0])))
        made[0] += n
        step.stage(f"evaluating: {made[0]}/{2 * len(todo)} images")

    source = job.evaluation or job.calibration
    pkey = ("diffusion", source.sha256 if source else None, gen, len(todo))
    with q.lock:
        before = q.parent_scores.get(pkey)
    if before is None:
        step.stage(f"evaluating: 0/{2 * len(todo)} images")
        own = imagegate.private_version(parent.manifest, {r: parent.buffers[r] for r in ROLES})
        before = imagegate.generate(own, q.device, q.config, gen, todo, step.watch, on_image)
        with q.lock:
            q.parent_scores.clear()
            q.parent_scores[pkey] = before
    else:
        on_image(len(todo))
    assert step.files is not None
    child = imagegate.private_version(parent.manifest, step.files)
    after = imagegate.generate(child, q.device, q.config, gen, todo, step.watch, on_image)
    env.progress(max(0, work - made[0]))  # prompts past eval_images
    return imagegate.metrics(before, after)


def diffusion_gate(metrics: dict[str, Any], max_drop: float, min_psnr_db: float) -> dict[str, Any]:
    from ovbatch.tasks.quantize import imagegate

    return imagegate.gate(metrics, max_drop, min_psnr_db)
