"""Quantization as a job kind: one job per (model version, recipe, options), on a queue of its own.

Dedicated: long and memory-heavy, so only workers started with ``ovbatch worker --kinds quantize``
take these jobs (``ovbatch.quantize.<DEVICE>``), one at a time, and transcription workers are never
held up by them.
"""

from __future__ import annotations

from ovbatch.jobs import Unit
from ovbatch.kinds import EngineLoad, JobKind, Loaded
from ovbatch.tasks.quantize import job
from ovbatch.tasks.quantize.recipes import FAMILIES
from ovbatch.tasks.quantize.spec import QuantizeJob


def load_quantizer(load: EngineLoad) -> Loaded:
    """Nothing is decrypted here (each job decrypts its parent and wipes it); the cached object keeps
    what a sweep over one recipe's options reuses: captured calibration inputs, the parent's scores."""
    config, quantized_config = dict(load.config), None
    # the gate measures the version at the precision transcription runs it, and a float parent in
    # f32 (whose accuracy "recheck", transcription's default for float versions on bf16 CPUs, matches)
    if FAMILIES.get(load.manifest.get("kind", "")) == "whisper":
        from ovbatch.tasks.transcribe.precision import whisper_config

        precision = load.settings.whisper_precision if load.settings is not None else "auto"
        config = whisper_config(load.config, load.device, precision, load.manifest.get("precision", ""))
        quantized_config = whisper_config(load.config, load.device, precision, "int8")
    quantizer = job.Quantizer(
        load.registry, load.ref, load.manifest, load.core, load.device, config, quantized_config=quantized_config
    )

    def release() -> None:
        quantizer.captures.clear()
        quantizer.parent_scores.clear()

    return Loaded(quantizer, 0, release=release)


def _commands() -> tuple[object, ...]:
    from ovbatch.tasks.quantize.cli import quantize

    return (quantize,)


KIND = JobKind(
    name="quantize",
    spec=QuantizeJob,
    unit=Unit("models", "models", "models/h", 3600, work="files"),
    run=job.run,
    finished=job.finished,
    engines=dict.fromkeys(FAMILIES, load_quantizer),
    commands=_commands,
    dedicated=True,
)
