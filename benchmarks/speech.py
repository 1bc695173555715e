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
            subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(folder / name)], check=True)
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
            subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", str(path)], check=True)
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


if __name__ == "__main__":
    print(json.dumps(make_clips(Path(sys.argv[1])), indent=2))
