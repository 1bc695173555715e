"""Random mutations of a version's encrypted objects and manifest (benchmarks/mutations.py, whose long
run is part of the fault suite): none accepted, each refused with an OvbatchError naming the model."""

from __future__ import annotations

from pathlib import Path

from benchmarks.mutations import run_mutations


def test_no_mutation_of_a_stored_version_is_accepted_and_each_error_names_the_model(tmp_path: Path) -> None:
    result = run_mutations(tmp_path / "m", count=600, seed=7)
    assert result["accepted"] == 0, result["accepted_examples"]
    assert result["unclear_errors"] == 0, result["unclear_examples"]
    assert len(result["by_kind"]) >= 7, f"every kind of mutation should be drawn: {result['by_kind']}"
