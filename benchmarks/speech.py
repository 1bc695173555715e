"""The English test speech for accuracy tests and benchmarks: espeak-ng sentences, several voices
and speeds, picked for variety (numbers, names, homophones, long and short), not for ease.

    python -m benchmarks.speech DIR                  # the 36 clips and a references.json
    python -m benchmarks.speech --accuracy DIR       # the 240-clip accuracy set
    python -m benchmarks.speech --demo-sets DIR      # calibration/ and evaluation/ for `ovbatch demo`
    python -m benchmarks.speech --wide N DIR         # the wide set: 583 more sentences, N voices each
"""

from __future__ import annotations

import json
import os
import shutil
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
# The accuracy set (``make_accuracy_set``): the sentences above and these, each spoken by two of
# ACCURACY_VOICES at other speeds, so that a 0.5-point WER difference between two engines stands out of
# the paired bootstrap's noise (the 36 clips above could not tell bf16 from f32 apart).
MORE_SENTENCES = [
    "The invoice number is four seven two nine, dated the third of November.",
    "Professor Nakamura published her findings in a respected journal.",
    "Add three tablespoons of olive oil and stir for two minutes.",
    "The bridge was closed after the storm damaged its northern support.",
    "Our team meets every Monday at a quarter past ten.",
    "Kindly return the signed contract before the end of the week.",
    "The library lends books, films and even musical instruments.",
    "A thin layer of frost covered the windows this morning.",
    "The patient was given two hundred milligrams of ibuprofen.",
    "Elephants can communicate over long distances using low sounds.",
    "The stock price fell by eight percent after the announcement.",
    "Could you spell your last name for me, please?",
    "The conference will be held in Lisbon in early October.",
    "Wash your hands thoroughly before preparing any food.",
    "The old lighthouse still guides ships along the rocky coast.",
    "Sixty two people attended the workshop on renewable energy.",
    "The printer on the third floor is out of paper again.",
    "My brother moved to Melbourne nine years ago.",
    "The jury reached a verdict after three days of deliberation.",
    "Keep the receipt in case you need to return the jacket.",
    "The satellite completes one orbit every ninety minutes.",
    "Fresh bread and warm soup were served to the tired hikers.",
    "The software update fixes a security flaw in the login page.",
    "Mount Everest is eight thousand eight hundred and forty nine meters high.",
    "The children built a sandcastle with towers and a moat.",
    "Please hold the line while I transfer your call.",
    "The river flooded the valley twice in the last decade.",
    "Her grandfather repaired clocks in a small shop downtown.",
    "We need a larger table for the dinner party on Saturday.",
    "The volcano erupted without warning in the early hours.",
    "Turn off the lights when you leave the conference room.",
    "The novel was translated into more than forty languages.",
    "The bus to the airport departs every twenty minutes.",
    "A gentle breeze carried the scent of pine through the valley.",
    "The company hired fifteen engineers in the first quarter.",
    "My appointment with the dentist is on Thursday afternoon.",
    "The cat jumped onto the shelf and knocked over a vase.",
    "Scientists measured the temperature of the ocean at various depths.",
    "The final score was three to one in favour of the visitors.",
    "Remember to water the tomatoes while I am away.",
    "The ambassador arrived in Nairobi for talks on trade.",
    "An umbrella is useless in such strong wind.",
    "The factory produces twelve thousand bottles every hour.",
    "They walked along the beach until the sun went down.",
    "The map shows every hiking trail in the national park.",
    "Our neighbours adopted a puppy from the local shelter.",
    "The pilot announced that we would land in fifteen minutes.",
    "Heat the oven to one hundred and eighty degrees.",
    "The violinist practised the same passage for hours.",
    "Every citizen has the right to a fair trial.",
    "The hotel offers free breakfast and a view of the harbour.",
    "Please write your answers clearly in black ink.",
    "The glacier has retreated nearly a kilometre since nineteen eighty.",
    "The baker starts work at four o'clock every morning.",
    "A sudden noise woke the baby from her nap.",
    "The marathon route passes through five different neighbourhoods.",
    "The bank will be closed on Monday for the public holiday.",
    "He paid thirty dollars for a ticket to the concert.",
    "The garden is full of roses, tulips and daffodils.",
    "Replace the battery if the alarm starts beeping.",
    "The ship carried grain, coffee and cotton across the Atlantic.",
    "Nobody expected the quiet student to win the debate.",
    "The engineers tested the bridge with heavy trucks.",
    "Our flight was cancelled, so we took the overnight train.",
    "The recipe was handed down from my great grandmother.",
    "The detective noticed a small scratch on the door handle.",
    "Fold the paper in half and then cut along the line.",
    "The population of the town doubled in twenty years.",
    "She answered every question calmly and with confidence.",
    "Bring a warm coat, because the nights are freezing.",
    "The committee will publish its report next Wednesday.",
    "A flock of geese flew south over the empty fields.",
    "The laptop battery lasts about seven hours.",
    "The farmer sold apples, pears and plums at the market.",
    "Two trains collided near the station, but nobody was hurt.",
    "The teacher asked us to read chapter eleven by Friday.",
    "Lightning struck the old oak tree during the night.",
    "The documentary explores the history of the silk road.",
    "Please switch your phone to silent mode during the performance.",
    "The council plans to plant a thousand trees along the river.",
    "My sister works as a nurse at the children's hospital.",
    "The thief escaped through an open window on the ground floor.",
    "The price includes tax, delivery and installation.",
    "After the rain, a double rainbow appeared over the hills.",
]
# voice, speed: none of these pairs is in VOICES (the clips above); each sentence gets two of them
ACCURACY_VOICES = [
    ("en-us", 175),
    ("en-gb-scotland", 150),
    ("en-us-nyc", 160),
    ("en-029", 145),
    ("en-gb-x-gbclan", 165),
    ("en+f2", 140),
    ("en-us+m2", 185),
    ("en-gb-x-gbcwmd", 155),
    ("en-gb+f4", 170),
    ("en-us+m4", 135),
    ("en-gb-x-rp+f1", 160),
]

# The wide set (``make_wide_set``): 583 sentences more (sentences_wide.txt: everyday English with
# numbers, dates, names and places; none of them in the lists above), each spoken by ``renditions``
# of these voice/speed pairs, none of which is in VOICES or ACCURACY_VOICES. The 180 clips the INT8
# gate evaluates on (1,712 words) put a 95 % paired interval 3.2-4.1 points wide on INT8 - float;
# on clips transcribed alone, those and the first rendition here (7,172 words) gave +-0.7 points,
# and two renditions with the gate's clips (12,632 words) should give about +-0.5. Packed clips stay
# at about +-1.2 however many there are: packing varies between runs (benchmarks/RESULTS.md).
WIDE_SENTENCES = Path(__file__).with_name("sentences_wide.txt")
WIDE_VOICES = [
    ("en-us+m1", 150),
    ("en-gb-scotland+f3", 160),
    ("en-029+f1", 150),
    ("en-gb-x-gbclan+m5", 140),
    ("en-us-nyc+f4", 170),
    ("en-gb+m6", 165),
    ("en-us+f5", 145),
    ("en-gb-x-gbcwmd+m2", 175),
    ("en-gb-x-rp+m4", 150),
    ("en-us+klatt", 160),
    ("en+f3", 180),
    ("en-gb+f1", 135),
]


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
            _sox_into(["sox", "-D", str(raw), "-r", "16000", "-c", "1"], folder / name)
    (folder / "references.json").write_text(json.dumps(refs, indent=2))
    return refs


def make_accuracy_set(folder: Path) -> dict[str, str]:
    """The accuracy set: SENTENCES + MORE_SENTENCES, each in two voices at two speeds (240 clips,
    about 16 minutes, 2,700 words); {file name: text}, and a references.json."""
    return _spoken_set(folder, "a", SENTENCES + MORE_SENTENCES, ACCURACY_VOICES, 2, 2)


def make_wide_set(folder: Path, renditions: int = 2) -> dict[str, str]:
    """The wide set: every line of sentences_wide.txt spoken by ``renditions`` (1 to 12) of
    WIDE_VOICES, a different pair for each rendition (583 x ``renditions`` clips, about 9.4 words
    each); {file name: text}, and a references.json. Clips already in ``folder`` are kept."""
    assert 1 <= renditions <= len(WIDE_VOICES), f"renditions must be 1 to {len(WIDE_VOICES)}"
    sentences = [line.strip() for line in WIDE_SENTENCES.read_text().splitlines() if line.strip()]
    return _spoken_set(folder, "w", sentences, WIDE_VOICES, renditions, 5)


def _spoken_set(
    folder: Path, prefix: str, sentences: list[str], voices: list[tuple[str, int]], renditions: int, step: int
) -> dict[str, str]:
    """Sentence ``i``'s rendition ``k`` in voice pair ``(step * i + k) % len(voices)``, as
    ``{prefix}{i:03d}{letter k}-{voice}-{speed}.wav``; clips already there are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    refs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(sentences):
            for k in range(renditions):
                voice, speed = voices[(step * i + k) % len(voices)]
                name = f"{prefix}{i:03d}{'abcdefghijkl'[k]}-{voice.replace('+', '_')}-{speed}.wav"
                refs[name] = text
                if not (folder / name).is_file():
                    _speak(text, voice, speed, folder / name, Path(tmp))
    (folder / "references.json").write_text(json.dumps(refs, indent=2))
    return refs


def _speak(text: str, voice: str, speed: int, out: Path, tmp: Path) -> None:
    raw = tmp / "raw.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
    # -D: no dither (random dither made every machine's clips differ); -G: gain guard, no clipping
    _sox_into(["sox", "-D", "-G", str(raw), "-r", "16000", "-c", "1"], out)


def _sox_into(sox: list[str], out: Path) -> None:
    """Run ``sox`` writing a wav beside ``out``, then rename it into place: a clip is there whole or
    not at all, so a run killed mid-write, or another process making the same set at the same time
    (test workers, a benchmark), never leaves or reads a cut-off clip that "already exists"."""
    part = out.with_name(out.name + f".{os.getpid()}.part")
    subprocess.run([*sox, "-t", "wav", str(part)], check=True)
    os.replace(part, out)


def make_long_file(folder: Path, name: str, sentences: list[str], voice: str = "en-us") -> tuple[Path, str]:
    """One long recording (minutes) of the given sentences with short pauses."""
    path = folder / name
    text = " ".join(sentences)
    if not path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "raw.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-g", "6", "-w", str(raw), text], check=True)
            _sox_into(["sox", "-D", str(raw), "-r", "16000", "-c", "1"], path)
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
    from ovbatch.tasks.quantize.whisper import drop_interval  # the gate's own interval

    words, diff = ours[:, 0], ours[:, 1] - theirs[:, 1]
    return {
        "diff_pts": round(float(diff.sum() / words.sum() * 100), 2),
        "ci95_pts": drop_interval(ours, theirs, resamples, seed),
        "errors": [int(ours[:, 1].sum()), int(theirs[:, 1].sum())],
        "words": int(words.sum()),
        "units": len(words),
    }


def reference_set(folder: Path, clips: Path, refs: dict[str, str], names: list[str]) -> Path:
    """``folder`` holding the clips ``names`` of ``clips`` (copied) with their ``.txt`` references beside:
    what ``ovbatch quantize --calibration/--eval`` reads as a set with references."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        if not (folder / name).exists():
            shutil.copy(clips / name, folder / name)
        (folder / name).with_suffix(".txt").write_text(refs[name])
    return folder


def make_demo_sets(folder: Path) -> tuple[Path, Path]:
    """Calibration (120 clips: one rendition of each accuracy-set sentence) and evaluation (the other
    rendition of every other sentence: 60 clips) folders for ``ovbatch demo``, ``.txt`` references beside."""
    refs = make_accuracy_set(folder / "all")
    names = sorted(refs)
    return (
        reference_set(folder / "calibration", folder / "all", refs, names[0::2]),
        reference_set(folder / "evaluation", folder / "all", refs, names[1::4]),
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--demo-sets"]:
        print(*make_demo_sets(Path(sys.argv[2])))
    elif sys.argv[1:2] == ["--wide"]:
        print(json.dumps(make_wide_set(Path(sys.argv[3]), int(sys.argv[2])), indent=2))
    elif sys.argv[1:2] == ["--accuracy"]:
        print(json.dumps(make_accuracy_set(Path(sys.argv[2])), indent=2))
    else:
        print(json.dumps(make_clips(Path(sys.argv[1])), indent=2))
