"""The Whisper gate's arithmetic (no model): WER before and after per group of files, the drop, and
the drop's paired bootstrap interval over files."""

from __future__ import annotations

from ovbatch.tasks.quantize.datasets import Dataset, Item
from ovbatch.tasks.quantize.whisper import Scored, gate_metrics

REFS = [f"the quick brown fox number {n} jumps over the lazy dog" for n in range(40)]


def _set(with_references: bool = True) -> Dataset:
    items = [
        Item(f"clip{n}.wav", f"file:///clip{n}.wav", None, REFS[n] if with_references else None) for n in range(40)
    ]
    return Dataset("audio", items)


def _scored(texts: list[str]) -> Scored:
    return Scored(texts, {f"clip{n}.wav": 4.0 for n in range(40)}, 1.0)


def test_the_drop_comes_with_its_interval_over_files() -> None:
    parent = _scored(list(REFS))
    worse = list(REFS)
    for n in range(0, 40, 4):  # one word wrong in every fourth file: 10 errors of 440 words
        worse[n] = worse[n].replace("lazy", "hazy")
    metrics = gate_metrics(_set(), parent, _scored(worse))
    short = metrics["short"]
    assert (short["before"], short["after"], short["drop"], short["words"]) == (0.0, 2.273, 2.273, 440), short
    lo, hi = short["drop_ci95"]
    assert 0 < lo < 2.273 < hi < 5, (
        f"ten errors spread over 40 files: an interval around the drop, clear of 0, got {lo, hi}"
    )
    assert "long" not in metrics, "no file over 30 s: no long group"

    same = gate_metrics(_set(), parent, _scored(list(REFS)))["short"]
    assert same["drop"] == 0 and same["drop_ci95"] == [0.0, 0.0], same

    one_file = list(REFS)
    one_file[7] = "nothing like it"  # every error in one file: the interval must hold 0
    lumped = gate_metrics(_set(), parent, _scored(one_file))["short"]
    assert lumped["drop"] > 0 and lumped["drop_ci95"][0] == 0.0, lumped


def test_without_references_the_parent_is_the_reference() -> None:
    parent = _scored(list(REFS))
    child = list(REFS)
    child[3] = child[3].replace("quick", "quack")
    metrics = gate_metrics(_set(with_references=False), parent, _scored(child))
    assert metrics["mode"] == "agreement"
    short = metrics["short"]
    assert short["before"] == 0.0 and short["after"] == 0.227 and short["drop_ci95"][1] > 0, short
