"""Which engine makes the transcription path fastest: openvino_genai's WhisperPipeline, optimum-intel's
OVModelForSpeechSeq2Seq, and ovbatch's own engine one file at a time and batched across files
(and what word timestamps cost it).

    .venv/bin/python -m benchmarks.engines_bench

Engines alone (no queue, no storage), warm, the same OpenVINO IR of the real Whisper base, greedy,
language "en", default CPU precision (bf16 here), 2 cores. WhisperPipeline and optimum-intel read
the IR from a plaintext folder (benchmarks/out/whisper-base-ir, made by cold_load.py's setup): that
is fine for a measurement, and it is exactly why ovbatch cannot use WhisperPipeline (folder paths
only; a decrypted model never touches the disk). ovbatch's engine runs from the encrypted registry.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import soundfile as sf

from benchmarks.cold_load import IR, OUT, setup
from benchmarks.speech import make_clips
from benchmarks.transcribe_bench import SPEECH, asr_pipeline, long_files, measure


def timed(name: str, paths: list[Path], refs: list[str], run: Callable[[list[Path]], list[str]]) -> dict[str, Any]:
    run(paths[:1])  # warm-up: first inference allocates
    return measure(name, paths, refs, run)


def load(p: Path):  # type: ignore[no-untyped-def]
    audio, rate = sf.read(str(p), dtype="float32")
    assert rate == 16000
    return audio


def genai() -> Callable[[list[Path]], list[str]]:
    import openvino_genai as ov_genai

    pipe = ov_genai.WhisperPipeline(str(IR), "CPU")
    return lambda paths: [pipe.generate(load(p).tolist(), language="<|en|>", task="transcribe").texts[0] for p in paths]


def optimum() -> Callable[[list[Path]], list[str]]:
    from optimum.intel import OVModelForSpeechSeq2Seq

    asr = asr_pipeline(OVModelForSpeechSeq2Seq.from_pretrained(str(IR), device="CPU"), IR)
    kwargs = {"language": "en", "task": "transcribe", "num_beams": 1}
    return lambda paths: [asr(load(p), generate_kwargs=kwargs)["text"] for p in paths]


def ours_engine(word_timestamps: bool = False) -> tuple[Any, Any]:
    """ovbatch's engine from the encrypted registry of cold_load.py's setup, and greedy English options."""
    from ovbatch.crypto.keyring import Keyring
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import load_and_compile
    from ovbatch.registry.refs import ModelRef
    from ovbatch.registry.registry import Registry
    from ovbatch.storage.file import FileStore
    from ovbatch.tasks.transcribe.engine import WhisperEngine
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    setup()
    registry = Registry(FileStore(OUT / "registry"), Keyring.load(OUT / "keyring.json"))
    version, compiled = load_and_compile(registry, ModelRef("whisper-base"), make_core(), "CPU")
    options = TranscribeOptions(language="en", word_timestamps=word_timestamps)
    return WhisperEngine.from_loaded(version, compiled), options


def ours(batched: bool, word_timestamps: bool = False) -> Callable[[list[Path]], list[str]]:
    from ovbatch.tasks.transcribe import audio

    engine, options = ours_engine(word_timestamps)
    if batched:
        return lambda paths: [t.text for t in engine.transcribe_many([load(p) for p in paths], options)]
    return lambda paths: [engine.transcribe(audio.iter_blocks(p, p.name), options).text for p in paths]


def main() -> None:
    setup()
    refs = make_clips(SPEECH)
    short, short_refs = [SPEECH / n for n in refs], list(refs.values())
    longs = long_files()
    long_paths, long_refs = [p for p, _ in longs], [t for _, t in longs]
    rows = []
    for name, make in (
        ("ovbatch engine, one file at a time", lambda: ours(False)),
        ("ovbatch engine, batched across files", lambda: ours(True)),
        ("ovbatch engine, batched across files, word timestamps", lambda: ours(True, word_timestamps=True)),
        ("openvino_genai WhisperPipeline", genai),
        ("optimum-intel OVModelForSpeechSeq2Seq", optimum),
    ):
        run = make()
        rows.append({**timed(name, short, short_refs, run), "set": "short"})
        rows.append({**timed(name, long_paths, long_refs, run), "set": "long"})
    (OUT / "engines_bench.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
