"""The English test speech for accuracy tests and benchmarks: espeak-ng sentences, several voices
and speeds, picked for variety (numbers, names, homophones, long and short), not for ease.

    python -m benchmarks.speech DIR     # writes the clips and a references.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SENTENCES = [
    "Mister Quilter is the apostle of the middle classes, and we are glad to welcome his gospel.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The meeting starts at nine thirty on Tuesday, the fourteenth of March.",
    "Our revenue grew by twelve percent to three point four million dollars last year.",
    "Doctor Patel will see you in room two hundred and six.",
    "Please call me back at five five five, one two three four.",
    "The flight from Boston to Denver was delayed by forty five minutes.",
    "She sells sea shells by the sea shore.",
    "Their car is parked over there, and they're waiting inside.",
    "I read the book yesterday, and now I read the news every morning.",
    "The weather in Amsterdam was cold, wet and windy all week.",
    "Quantization reduces the model size without hurting accuracy much.",
    "The committee approved the budget after a long and heated debate.",
    "Turn left at the second traffic light, then go straight for two miles.",
    "Whales are mammals that breathe air and nurse their young.",
    "A stitch in time saves nine, as my grandmother used to say.",
    "The password must contain at least eight characters and one number.",
    "We shipped version two of the software on the first of July.",
    "Bright sunshine melted the snow on the mountain by noon.",
    "Please remember to bring your passport and a pen to the office.",
    "The orchestra played Beethoven's fifth symphony to a full house.",
    "Seventeen students passed the exam, and three will take it again.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Never underestimate the power of a good night's sleep.",
    "The train to Chicago leaves from platform eleven at half past six.",
    "Electric cars are becoming cheaper every year.",
    "He whispered the answer so quietly that nobody heard it.",
    "The museum will be closed for renovation until next spring.",
]
VOICES = [("en-us", 150), ("en-gb", 140), ("en+m3", 165), ("en-us+f3", 130), ("en-gb-x-rp", 175), ("en+m7", 155)]


def make_clips(folder: Path) -> dict[str, str]:
    """Write one 16 kHz mono wav per sentence (voices and speeds rotate); return {file name: text}."""
    folder.mkdir(parents=True, exist_ok=True)
    refs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            voice, speed = VOICES[i % len(VOICES)]
            name = f"s{i:02d}-{voice.replace('+', '_')}-{speed}.wav"
            refs[name] = text
            if (folder / name).is_file():
                continue
            raw = Path(tmp) / "raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
            # -D: no dither. sox dithers with random noise by default, so every machine made slightly
            # different clips, and word timings near a pause moved with that noise
            subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", str(folder / name)], check=True)
    (folder / "references.json").write_text(json.dumps(refs, indent=2))
    return refs


def make_long_file(folder: Path, name: str, sentences: list[str], voice: str = "en-us") -> tuple[Path, str]:
    """One long recording (minutes) of the given sentences with short pauses."""
    path = folder / name
    text = " ".join(sentences)
    if not path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-g", "6", "-w", str(raw), text], check=True)
            subprocess.run(["sox", "-D", str(raw), "-r", "16000", "-c", "1", str(path)], check=True)
    return path, text


def normalizer():  # type: ignore[no-untyped-def]
    """Whisper's English normaliser (numbers, punctuation, case), the same for every engine.

    The spelling map (British/American) ships with hub tokenizers, which are not reachable here:
    an empty map leaves spelling alone, the same way for both sides.
    """
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})


def wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    norm = normalizer()
    refs = [norm(r) for r in references]
    hyps = [norm(h) for h in hypotheses]
    return float(jiwer.wer(refs, hyps))


def error_units(references: list[str], hypotheses: list[str], block_words: int | None = None) -> np.ndarray:
    """``(reference words, word errors)`` per unit, for a paired comparison of two engines.

    A unit is a file, or with ``block_words`` a run of that many reference words of a file (long
    files: an error is counted at the reference word where it happens, an insertion at the word
    before which it is inserted). The units of two engines on the same references pair up.
    """
    import jiwer

    norm = normalizer()
    rows = []
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        ref, hyp = norm(reference), norm(hypothesis)
        n = len(ref.split())
        at = np.zeros(n + 1)
        if hyp.strip():
            for chunk in jiwer.process_words(ref, hyp).alignments[0]:
                if chunk.type in ("substitute", "delete"):
                    at[chunk.ref_start_idx : chunk.ref_end_idx] += 1
                elif chunk.type == "insert":
                    at[chunk.ref_start_idx] += chunk.hyp_end_idx - chunk.hyp_start_idx
        else:
            at[:n] = 1
        size = block_words or n
        for start in range(0, n, size):
            end = min(n, start + size)
            rows.append((end - start, at[start:end].sum() + (at[n] if end == n else 0)))
    return np.asarray(rows, dtype=np.float64)


def paired_wer_difference(
    ours: np.ndarray, theirs: np.ndarray, resamples: int = 10000, seed: int = 0
) -> dict[str, float | list[float]]:
    """WER(ours) - WER(theirs) in points, with a 95 % paired bootstrap interval over the units:
    an interval that holds 0 means this audio cannot tell the two engines apart."""
    assert np.array_equal(ours[:, 0], theirs[:, 0]), "units must share their references"
    words, diff = ours[:, 0], ours[:, 1] - theirs[:, 1]
    picks = np.random.default_rng(seed).integers(0, len(words), size=(resamples, len(words)))
    boot = diff[picks].sum(axis=1) / words[picks].sum(axis=1) * 100
    return {
        "diff_pts": round(float(diff.sum() / words.sum() * 100), 2),
        "ci95_pts": [round(float(np.percentile(boot, 2.5)), 2), round(float(np.percentile(boot, 97.5)), 2)],
        "errors": [int(ours[:, 1].sum()), int(theirs[:, 1].sum())],
        "words": int(words.sum()),
        "units": len(words),
    }


if __name__ == "__main__":
    print(json.dumps(make_clips(Path(sys.argv[1])), indent=2))
