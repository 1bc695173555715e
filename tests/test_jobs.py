"""The spine's start and stops of a job (ovbatch/jobs.py: ``begin``, ``stopped``), which every kind's
``run`` goes through: a cancelled batch, a finished job, bad input, a cancel, the time limit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ovbatch.errors import BadInputError, InputError, JobCancelled, JobTimeLimitExceeded, StorageError
from ovbatch.jobs import STOPS, JobEnv, JobSpec, Outcome, begin, read_marker, stopped, write_marker
from ovbatch.storage import ObjectStore, open_store


def _job(out: Path) -> JobSpec:
    return JobSpec(
        batch_id="b1",
        job_id="j1",
        display="talks/a.wav",
        relpath="talks/a.wav",
        model="m@1",
        device="CPU",
        out_url=out.as_uri(),
    )


def _env(cancelled: set[str]) -> JobEnv:
    def no_input(url: str) -> None:
        raise AssertionError(f"begin opened an input: {url}")

    return JobEnv(
        open_input=no_input,  # type: ignore[arg-type]
        out_store=open_store,
        engine_for=lambda job: pytest.fail("begin must not load an engine"),
        is_cancelled=lambda batch_id: batch_id in cancelled,
    )


def test_begin_ends_a_job_of_a_cancelled_batch_before_it_starts(tmp_path: Path) -> None:
    outcome = begin(_job(tmp_path), _env({"b1"}), read_marker, "this file", extra={"seed": 7})
    assert isinstance(outcome, Outcome), f"a cancelled batch's job must not start: {outcome!r}"
    assert outcome.status == "cancelled" and outcome.error == "batch cancelled before this file started"
    assert outcome.extra == {"seed": 7}, "a cancelled job keeps its record fields"


def test_begin_returns_a_finished_jobs_outcome_and_otherwise_its_output_store(tmp_path: Path) -> None:
    job, env = _job(tmp_path), _env(set())
    store = begin(job, env, read_marker, "this file")
    assert isinstance(store, ObjectStore), f"a new job gets its output store, not {store!r}"
    write_marker(store, job, Outcome("done", ["a.txt"], 1.0, 2.5, extra={"language": "en"}))
    again = begin(job, env, read_marker, "this file")
    assert isinstance(again, Outcome) and again.reused, f"a redelivered finished job must not run again: {again!r}"
    assert again.outputs == ["a.txt"] and again.extra == {"language": "en"}


@pytest.mark.parametrize(
    ("exc", "status", "retryable"),
    [
        (JobCancelled("talks/a.wav: batch cancelled while it ran"), "cancelled", False),
        (JobTimeLimitExceeded("talks/a.wav: stopped after the job time limit"), "failed", True),
        (BadInputError("not a WAV file"), "failed", False),
    ],
)
def test_stopped_turns_each_stop_into_its_outcome(exc: Exception, status: str, retryable: bool) -> None:
    outcome = stopped(exc, time.perf_counter() - 1.0, extra={"seed": 7})
    assert (outcome.status, outcome.retryable) == (status, retryable), f"{type(exc).__name__}: {outcome!r}"
    assert outcome.processing_s >= 1.0 and outcome.extra == {"seed": 7} and outcome.error


def test_bad_input_is_named_once_by_what_the_user_gave() -> None:
    assert stopped(InputError("not a WAV file"), 0.0, name="talks/a.wav").error == "talks/a.wav: not a WAV file"
    named_already = InputError("talks/a.wav: not a WAV file")
    assert stopped(named_already, 0.0, name="talks/a.wav").error == "talks/a.wav: not a WAV file"
    assert stopped(InputError("not a WAV file"), 0.0).error == "not a WAV file"


def test_an_infrastructure_error_is_not_a_stop() -> None:
    assert not isinstance(StorageError("S3 down"), STOPS), "infrastructure errors must raise, not end the job"
    with pytest.raises(TypeError, match="not a job stop"):
        stopped(StorageError("S3 down"), 0.0)


def test_job_ids_stay_what_earlier_releases_made() -> None:
    """A resubmission skips the jobs it finished before by their ids: an id that changed between
    releases would make every finished file, image or quantization of a batch run again."""
    from ovbatch.tasks.imagegen.spec import image_job_id
    from ovbatch.tasks.quantize.spec import job_id_for as quantize_id
    from ovbatch.tasks.transcribe.spec import job_id_for as transcribe_id
    from ovbatch.tasks.transcribe.types import TranscribeOptions

    # made by the kinds' own hashing before it moved into jobs.job_id_of
    transcribe = transcribe_id(
        "ab" * 32, "whisper-base@2", TranscribeOptions(language="en"), ("txt", "srt"), "s3://out/talks/", "2024/a.wav"
    )
    assert transcribe == "d3456f0594f9f6dcec37224a2cbb0f3f", "a transcription job's id changed"
    image = image_job_id(
        model_digest="cd" * 32,
        loras=(),
        prompt="a red fox",
        negative_prompt="",
        seed=7,
        steps=4,
        guidance=1.0,
        width=512,
        height=512,
        scheduler=None,
        out_url="file:///out/",
        relpath="prompts/0001-7.png",
    )
    assert image == "8b69b77b34fd20b499e880a84a1f838f", "an image job's id changed"
    quantize = quantize_id("ef" * 32, "int8-hybrid", {"alpha": 0.5}, None, None, 0.5, "whisper-base", "s3://q/", "en")
    assert quantize == "43ccb204dacb951bb937f7fbd5004d7a", "a quantization job's id changed"
