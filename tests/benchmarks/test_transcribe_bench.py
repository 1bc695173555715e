"""The INT8 gate's clip split, shared by the bench's quantize step and its end-to-end accuracy rows."""

from __future__ import annotations

from benchmarks.transcribe_bench import gate_split


def test_gate_split_evaluates_on_the_clips_it_did_not_calibrate_on() -> None:
    names = [f"a{i:03d}.wav" for i in range(240)]
    calibration, evaluation = gate_split(names)
    assert (len(calibration), len(evaluation)) == (60, 180), "every fourth clip calibrates, the 180 others evaluate"
    assert not set(calibration) & set(evaluation), "no clip both calibrates and evaluates"
    assert sorted(calibration + evaluation) == names, "the split covers the set"
    _, sixty = gate_split(names, 60)
    assert len(sixty) == 60 and not set(sixty) & set(calibration), "the 60-clip gate is calibration-free too"
