"""The benchmarks' English speech sets (benchmarks/speech.py): the wide set is new text in new voices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf

from benchmarks import speech


def _wide_sentences() -> list[str]:
    return [line.strip() for line in speech.WIDE_SENTENCES.read_text().splitlines() if line.strip()]


def test_the_wide_set_holds_583_sentences_none_of_them_in_the_other_sets() -> None:
    sentences = _wide_sentences()
    assert len(sentences) == 583, f"sentences_wide.txt holds {len(sentences)} sentences, the docs say 583"
    assert len({s.lower() for s in sentences}) == len(sentences), "sentences_wide.txt repeats a sentence"
    older = {s.lower() for s in speech.SENTENCES + speech.MORE_SENTENCES}
    shared = [s for s in sentences if s.lower() in older]
    assert not shared, f"wide sentences already in the accuracy set: {shared}"


def test_the_wide_set_speaks_in_voices_the_other_sets_do_not_use() -> None:
    older = set(speech.VOICES) | set(speech.ACCURACY_VOICES)
    assert len(set(speech.WIDE_VOICES)) == len(speech.WIDE_VOICES) == 12
    assert not older & set(speech.WIDE_VOICES), f"voice/speed pairs reused: {older & set(speech.WIDE_VOICES)}"


def test_make_wide_set_gives_each_sentence_distinct_voices_as_16khz_mono_clips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = tmp_path / "sentences.txt"
    lines.write_text("The ferry crosses the bay every forty minutes.\n\nPlease sign on the second page.\n")
    monkeypatch.setattr(speech, "WIDE_SENTENCES", lines)
    refs = speech.make_wide_set(tmp_path / "wide", renditions=3)
    assert len(refs) == 6
    assert json.loads((tmp_path / "wide" / "references.json").read_text()) == refs
    for i in range(2):
        names = sorted(n for n in refs if n.startswith(f"w{i:03d}"))
        assert len(names) == 3 and len({n.split("-", 1)[1] for n in names}) == 3, f"voices not distinct: {names}"
        for name in names:
            info = sf.info(str(tmp_path / "wide" / name))
            assert (info.samplerate, info.channels) == (16000, 1), f"{name}: {info.samplerate} Hz, {info.channels} ch"
            assert info.duration > 1.0, f"{name} is {info.duration:.2f} s: espeak-ng spoke nothing?"
    with pytest.raises(AssertionError, match="renditions must be 1 to 12"):
        speech.make_wide_set(tmp_path / "none", renditions=13)
