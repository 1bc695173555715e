"""Which engine choices move WER on the 36 short clips: window padding and numeric precision.

    .venv/bin/python -m benchmarks.engine_ablation

Imports the real Whisper base into a temporary encrypted registry, then transcribes the clips of
benchmarks/speech.py with each variant (language "en", greedy) and prints WER and wall time.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from benchmarks.speech import make_clips, wer
from ovbatch.crypto.keyring import Keyring
from ovbatch.ov import make_core
from ovbatch.registry.loader import load_and_compile
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.samples import fetch_whisper_base
from ovbatch.storage.file import FileStore
from ovbatch.tasks.transcribe import audio
from ovbatch.tasks.transcribe.engine import EngineConfig, WhisperEngine
from ovbatch.tasks.transcribe.types import TranscribeOptions

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    clips = REPO / ".cache" / "speech"
    refs = make_clips(clips)
    with tempfile.TemporaryDirectory(prefix="ovbatch-ablation-") as tmp:
        ring = Keyring(Path(tmp) / "keyring.json")
        ring.add_new_key()
        ring.save()
        registry = Registry(FileStore(Path(tmp) / "storage"), ring)
        registry.import_folder(fetch_whisper_base(REPO / ".cache" / "models" / "whisper-base-ct2"), "whisper-base")
        core = make_core()
        for precision in ("bf16", "f32"):
            config = {"INFERENCE_PRECISION_HINT": precision}
            version, compiled = load_and_compile(registry, ModelRef("whisper-base"), core, "CPU", config=config)
            for pad_log_mel in (False, True):
                engine = WhisperEngine.from_loaded(version, compiled, EngineConfig(pad_log_mel=pad_log_mel))
                t0 = time.perf_counter()
                hyps = [
                    engine.transcribe(audio.iter_blocks(clips / n, n), TranscribeOptions(language="en")).text
                    for n in refs
                ]
                row = {
                    "precision": precision,
                    "pad_log_mel": pad_log_mel,
                    "wer_pct": round(wer(list(refs.values()), hyps) * 100, 2),
                    "wall_s": round(time.perf_counter() - t0, 1),
                }
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
