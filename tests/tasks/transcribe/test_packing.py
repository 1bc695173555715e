"""Packing short files into shared windows: the layout and handing segments back (pure parts)."""

from __future__ import annotations

import numpy as np

from ovbatch.tasks.transcribe.packing import Member, doubtful, lay_out, pack_audio, quiet, split_segments
from ovbatch.tasks.transcribe.types import Segment, Word

SR = 16000


def test_files_are_laid_end_to_end_with_silence_between_them() -> None:
    a, b, c = (np.full(n, v, dtype=np.float32) for n, v in ((SR, 0.1), (2 * SR, 0.2), (SR // 2, 0.3)))
    audio, members = pack_audio([a, b, c], gap=SR)
    assert members == [Member(0, SR), Member(2 * SR, 2 * SR), Member(5 * SR, SR // 2)]
    assert len(audio) == 5 * SR + SR // 2, "no silence after the last file"
    for member, original in zip(members, (a, b, c), strict=True):
        assert np.array_equal(audio[member.start : member.start + member.length], original)
    assert not audio[SR : 2 * SR].any() and not audio[4 * SR : 5 * SR].any(), "the gaps are silence"
    assert lay_out([], SR) == [] and len(pack_audio([], SR)[0]) == 0


def test_segments_without_words_go_whole_to_the_file_they_overlap_most_in_its_own_time() -> None:
    members = lay_out([3 * SR, 2 * SR, 4 * SR], 2 * SR)  # 0-3 s, 5-7 s, 9-13 s
    segments = [
        Segment(0.0, 2.8, " one"),
        Segment(4.6, 7.5, " two"),  # starts in the gap and runs past its file's end
        Segment(6.9, 10.5, " three"),  # mostly in the third file
        Segment(7.6, 7.9, " gap"),  # only silence: the nearest file
    ]
    parts = split_segments(segments, members)
    assert [[s.text for s in p] for p in parts] == [[" one"], [" two", " gap"], [" three"]]
    two = parts[1][0]
    assert (two.start_s, two.end_s) == (0.0, 2.0), "moved to the file's time and kept inside it"
    three = parts[2][0]
    assert (three.start_s, three.end_s) == (0.0, 1.5)


def test_a_segment_with_words_across_two_files_is_cut_between_them() -> None:
    members = lay_out([2 * SR, 2 * SR], 2 * SR)  # 0-2 s, 4-6 s
    words = (
        Word(0.2, 0.8, " Hello", 0.9),
        Word(0.9, 1.6, " there.", 0.8),
        Word(4.1, 4.7, " Second", 0.9),
        Word(4.8, 5.5, " file.", 0.7),
    )
    parts = split_segments([Segment(0.2, 5.5, " Hello there. Second file.", words)], members)
    assert [[s.text for s in p] for p in parts] == [[" Hello there."], [" Second file."]]
    second = parts[1][0]
    assert (second.start_s, second.end_s) == (0.1, 1.5)
    assert [(w.text, w.start_s, w.end_s) for w in second.words] == [(" Second", 0.1, 0.7), (" file.", 0.8, 1.5)]
    whole = split_segments([Segment(4.1, 5.5, " Second file.", words[2:])], members)
    assert whole[0] == [] and whole[1][0].text == " Second file.", "a segment inside one file stays whole"


def test_a_pack_is_doubtful_when_a_segment_spans_two_files_or_a_file_gets_no_text() -> None:
    members = lay_out([int(2.5 * SR), 4 * SR, 5 * SR], 2 * SR)  # 0-2.5 s, 4.5-8.5 s, 10.5-15.5 s

    def why(segments: list[Segment]) -> str | None:
        return doubtful(segments, members, split_segments(segments, members))

    # as seen on real clips: Whisper skipped the first file's speech and stamped the second's words
    # 0-7 s, coarse times for every segment after it; the words would have gone to the wrong file
    skipped = [Segment(0.0, 7.0, " second file's words"), Segment(7.0, 14.0, " third"), Segment(14.0, 15.5, " x")]
    assert why(skipped) is not None and "spans two files" in str(why(skipped))
    # coarse times that still fall inside one file each are trusted
    coarse = [Segment(0.0, 3.0, " one"), Segment(4.0, 9.0, " two"), Segment(10.0, 15.5, " three")]
    assert why(coarse) is None
    lost = [Segment(0.0, 2.4, " one"), Segment(10.6, 15.0, " three")]
    assert why(lost) == "file 2 of 3 got no text"
    blank = [Segment(0.0, 2.4, " one"), Segment(4.6, 8.0, "  "), Segment(10.6, 15.0, " three")]
    assert why(blank) == "file 2 of 3 got no text", "a segment of blanks is no text"
    # words cut a segment between files by their own times: no doubt where every file gets words
    words = (Word(0.2, 2.0, " one", 0.9), Word(4.6, 8.0, " two", 0.9), Word(10.6, 15.0, " three", 0.9))
    assert why([Segment(0.2, 15.0, " one two three", words)]) is None


def test_only_files_with_nothing_above_minus_40_dbfs_count_as_quiet() -> None:
    t = np.arange(16000, dtype=np.float32) / 16000
    assert quiet(np.zeros(16000, dtype=np.float32)) and quiet(np.zeros(0, dtype=np.float32))
    assert quiet(0.009 * np.sin(2 * np.pi * 220 * t)), "a -41 dBFS tone is a noise floor"
    assert not quiet(0.02 * np.sin(2 * np.pi * 220 * t)), "a -34 dBFS tone could be quiet speech"
    click = np.zeros(16000, dtype=np.float32)
    click[8000] = -0.5
    assert not quiet(click), "one loud sample, of either sign, is enough to pack a file"
