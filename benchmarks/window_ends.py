"""Where a long file's pieces end and where a window's text may end: the quietest point between 20
and 30 s (ovbatch until 2026-12-03) or the latest pause before 30 s (``streaming.quiet_cut`` now);
the text free to end anywhere or held until its last segment reaches the end of the window's sound
(``EngineConfig.hold_eot_s``, now 1.5 s).

    .venv/bin/python -m benchmarks.window_ends [--rounds N] [--alone]     # about 5 minutes on 2 cores

In process (no worker, no queue), English, greedy, the float version compiled as a worker compiles
it on this CPU (bf16 where the CPU has it):

* the two long files of ``benchmarks.transcribe_bench`` (702 s, espeak-ng, two voices), with
  timestamps (the default) and without (``--no-timestamps``; the hold only concerns timestamps);
* the 240 clips of the accuracy set (``benchmarks.speech.make_accuracy_set``), packed several to a
  window as a worker packs them, and with ``--alone`` also a window each, with and without the hold,
  and the paired difference in WER points with its 95 % bootstrap interval.

After one warm-up transcription (not shown), each row: word errors, seconds, and the engine's
counters (windows encoded, tokens, decoder steps, encoder and decoder seconds, temperature
fallbacks, decodes the hold kept going / of them cut back as improbable). The earlier cut is
reproduced here (``quietest_cut``) and patched in for its rows.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.speech import error_units, make_accuracy_set, paired_wer_difference, wer
from benchmarks.transcribe_bench import REPO, long_files


def quietest_cut(audio: np.ndarray, lo: int, hi: int) -> int:
    """The rule before 2026-12-03: the quietest 0.2 s in ``[lo, hi]`` (the first of equals)."""
    from ovbatch.tasks.transcribe.streaming import SAMPLE_RATE, _smoothed_energy

    hop = SAMPLE_RATE // 100
    energy = _smoothed_energy(audio[:hi], hop, 20)
    first = lo // hop
    if len(energy) <= first:
        return hi
    return (first + int(np.argmin(energy[first:]))) * hop


HEAD = "| errors | s | windows | tokens | steps | encoder s | decoder s | fallbacks | held / cut back |"


def _run(
    version: Any, compiled: dict[str, Any], audios: list[np.ndarray], refs: list[str], timestamps: bool, **config: Any
) -> tuple[np.ndarray, str]:
    from ovbatch.tasks.transcribe.engine import EngineConfig, WhisperEngine
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    engine = WhisperEngine.from_loaded(version, compiled, EngineConfig(**config))
    t0 = time.perf_counter()
    out = engine.transcribe_many(audios, TranscribeOptions(language="en", timestamps=timestamps))
    seconds = time.perf_counter() - t0
    hyps = [t.text for t in out]
    units = error_units(refs, hyps)
    s = engine.stats
    cells = (
        f"{int(units[:, 1].sum())} errors of {int(units[:, 0].sum())} ({wer(refs, hyps) * 100:.2f} %) | "
        f"{seconds:.2f} | {s.windows} | {s.tokens} | {s.steps} | {s.encoder_s:.2f} | {s.prefill_s + s.step_s:.2f} | "
        f"{s.fallbacks} | {s.held} / {s.unheld} |"
    )
    return units, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the long-file rows, in the same order")
    parser.add_argument("--alone", action="store_true", help="also the 240 clips a window each (4 more minutes)")
    args = parser.parse_args()
    from benchmarks.precision_bench import whisper_registry
    from ovbatch.ov import make_core
    from ovbatch.registry.loader import decrypt_version
    from ovbatch.registry.refs import ModelRef
    from ovbatch.tasks.transcribe import audio, streaming
    from ovbatch.tasks.transcribe.engine import DECODER, DETOKENIZER, ENCODER

    version = decrypt_version(whisper_registry(REPO / ".cache" / "bench-precision"), ModelRef.parse("whisper-base@1"))
    core = make_core()
    threads = {"INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0))}
    compiled: dict[str, Any] = {
        role: core.compile_model(version.read_model(core, role), "CPU", threads) for role in (ENCODER, DECODER)
    }
    compiled[DETOKENIZER] = core.compile_model(version.read_model(core, DETOKENIZER), "CPU")

    files = long_files()
    long_refs = [r for _, r in files]
    long_audio = [audio.load(p, p.name) for p, _ in files]
    latest: Callable[..., int] = streaming.quiet_cut
    rows = [
        ("quietest 20-30 s (before)", quietest_cut, 0.0),
        ("latest pause", latest, 0.0),
        ("latest pause, held (now)", latest, 1.5),
    ]
    _run(version, compiled, long_audio[:1], long_refs[:1], True)  # warm-up: the first calls allocate
    print(f"long files\n\n| cut, eot | timestamps {HEAD}\n| --- | --- {'| --- ' * 9}|", flush=True)
    try:
        for _ in range(args.rounds):
            for name, rule, hold in rows:
                streaming.quiet_cut = rule
                for timestamps in (True, False):
                    if hold and not timestamps:
                        continue  # the hold concerns timestamped windows only
                    _, cells = _run(version, compiled, long_audio, long_refs, timestamps, hold_eot_s=hold)
                    print(f"| {name} | {'yes' if timestamps else 'no'} | {cells}", flush=True)
    finally:
        streaming.quiet_cut = latest

    clips = REPO / ".cache" / "speech-accuracy"
    refs = make_accuracy_set(clips)
    names = sorted(refs)
    short_audio = [audio.load(clips / n, n) for n in names]
    short_refs = [refs[n] for n in names]
    print(f"\n{len(names)} short clips\n\n| windows | eot {HEAD}\n| --- | --- {'| --- ' * 9}|", flush=True)
    diffs = []
    for packing, pack_max_s in [("packed", 10.0)] + ([("a window each", 0.0)] if args.alone else []):
        units = {}
        for hold in (0.0, 1.5):
            units[hold], cells = _run(
                version, compiled, short_audio, short_refs, True, hold_eot_s=hold, pack_max_s=pack_max_s
            )
            print(f"| {packing} | {'held 1.5 s' if hold else 'free'} | {cells}", flush=True)
        d = paired_wer_difference(units[1.5], units[0.0])
        diffs.append(f"{packing}: held - free {d['diff_pts']:+.2f} points, 95 % CI {d['ci95_pts']}")
    print("\n" + "\n".join(diffs))


if __name__ == "__main__":
    main()
