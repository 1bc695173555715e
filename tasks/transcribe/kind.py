"""Transcription as a job kind: Whisper models, one job per audio file, progress in audio seconds."""

from __future__ import annotations

from ovbatch.jobs import Unit
from ovbatch.kinds import EngineLoad, JobKind, Loaded
from ovbatch.tasks.transcribe import job
from ovbatch.tasks.transcribe.spec import TranscribeJob

DECODER_BIN = "openvino_decoder_model.bin"  # the aligner holds about one more copy of these weights


def load_whisper(load: EngineLoad) -> Loaded:
    """Decrypt and compile a Whisper version; its batcher feeds concurrent jobs into one engine call."""
    from ovbatch.tasks.transcribe.batcher import Batcher
    from ovbatch.tasks.transcribe.engine import EngineConfig, WhisperEngine
    from ovbatch.tasks.transcribe.precision import load_whisper_models

    version, compiled, careful = load_whisper_models(load)  # careful: f32 copies for doubtful windows
    size = sum(int(b.nbytes) for b in version.buffers.values())
    pack_s = load.settings.whisper_pack_s if load.settings is not None else EngineConfig.pack_max_s
    engine = WhisperEngine.from_loaded(version, compiled, EngineConfig(pack_max_s=pack_s), careful)
    if engine.aligner is not None:  # word timestamps compile a second decoder on first use
        extra = int(version.buffers[DECODER_BIN].nbytes)
        engine.aligner.on_compiled = lambda: load.grow(extra)
    batcher = Batcher(engine, max_files=load.concurrency)
    return Loaded(batcher, size, release=lambda: batcher.retire(then=version.wipe))


def _commands() -> tuple[object, ...]:
    from ovbatch.tasks.transcribe.cli import transcribe

    return (transcribe,)


KIND = JobKind(
    name="transcribe",
    spec=TranscribeJob,
    unit=Unit("audio_s", "s of audio", "x real time"),
    run=job.run,
    finished=job.finished,
    engines={"whisper": load_whisper},
    commands=_commands,
)
