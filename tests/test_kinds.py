"""The job-kind spine: kinds are registered by name, messages are validated strictly on the worker,
a model of the wrong kind is refused, and a job's record is built in one place."""

from __future__ import annotations

import ast
import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest

from ovbatch import kinds
from ovbatch.errors import BadMessageError, ConfigError, WrongModelKindError
from ovbatch.jobs import Outcome, record

SHA = "ab" * 32


def transcribe_message(**changes: Any) -> dict[str, Any]:
    message = {
        "batch_id": "b",
        "job_id": "j",
        "display": "a.wav",
        "relpath": "a.wav",
        "model": "whisper-base@1",
        "device": "CPU",
        "out_url": "file:///out/",
        "input_url": "registry:inputs/sha256/" + SHA,
        "input_sha256": SHA,
        "formats": ["txt", "json"],
        "options": {"language": "en", "task": "transcribe", "word_timestamps": False},
        "max_audio_duration_s": 60.0,
    }
    return {**message, **changes}


def image_message(**changes: Any) -> dict[str, Any]:
    message = {
        "batch_id": "b",
        "job_id": "j",
        "display": "inline 1 seed 3",
        "relpath": "0001-3-a-cat.png",
        "model": "lcm@1",
        "device": "CPU",
        "out_url": "file:///out/",
        "row": 1,
        "source": "inline 1",
        "model_digest": SHA,
        "prompt": "a cat",
        "seed": 3,
        "steps": 4,
        "guidance": 8.0,
        "width": 512,
        "height": 512,
        "loras": [{"model": "style@1", "digest": SHA, "alpha": 0.7}],
    }
    return {**message, **changes}


def test_every_kind_is_registered_with_its_task_name() -> None:
    names = {kind.name: kind.task_name for kind in kinds.all_kinds()}
    assert names == {
        "transcribe": "ovbatch.transcribe",
        "txt2img": "ovbatch.txt2img",
        "quantize": "ovbatch.quantize",
        "benchmark": "ovbatch.benchmark",
        "pipeline": "ovbatch.pipeline",
    }
    with pytest.raises(
        ConfigError, match="unknown job kind 'nope'; known: benchmark, pipeline, quantize, transcribe, txt2img"
    ):
        kinds.get("nope")


@pytest.mark.parametrize(
    ("kind", "message"),
    [("transcribe", transcribe_message()), ("txt2img", image_message())],
)
def test_a_valid_message_round_trips(kind: str, message: dict[str, Any]) -> None:
    spec = kinds.get(kind).spec
    assert spec.from_json(message).to_json() == spec.from_json(spec.from_json(message).to_json()).to_json()


@pytest.mark.parametrize(
    ("kind", "message", "expected"),
    [
        ("transcribe", transcribe_message(extra=1), "unknown field `extra`"),
        ("transcribe", transcribe_message(formats=["txt", "exe"]), "Invalid enum value 'exe' - at `$.formats[1]`"),
        ("transcribe", transcribe_message(input_sha256="../../etc"), "`$.input_sha256`"),
        ("transcribe", transcribe_message(options={"language": "en", "task": "rm -rf"}), "`$.options.task`"),
        ("transcribe", transcribe_message(max_audio_duration_s=-1), "Expected `float` > 0.0"),
        ("txt2img", image_message(width=500), "multiple of 8 - at `$.width`"),
        ("txt2img", image_message(steps="4"), "Expected `int`, got `str`"),
        ("txt2img", image_message(seed=2**40), "Expected `int` <= 4294967295"),
        ("txt2img", image_message(prompt=""), "Expected `str` of length >= 1"),
        ("txt2img", image_message(scheduler="KARRAS"), "`$.scheduler`"),
        ("txt2img", image_message(loras=[{"model": "x@1", "digest": SHA, "alpha": 99}]), "`$.loras[0].alpha`"),
        ("txt2img", image_message(admin=True), "unknown field `admin`"),
    ],
)
def test_a_bad_message_is_refused_with_the_field_named(kind: str, message: dict[str, Any], expected: str) -> None:
    with pytest.raises(BadMessageError) as caught:
        kinds.get(kind).spec.from_json(message)
    assert expected in str(caught.value), str(caught.value)


def test_a_model_of_another_kind_is_refused_before_anything_runs() -> None:
    whisper = {"name": "whisper-base", "version": "1", "kind": "whisper"}
    with pytest.raises(
        WrongModelKindError,
        match="whisper-base@1 is a 'whisper' model; txt2img jobs need one of: lcm, stable-diffusion",
    ):
        kinds.get("txt2img").check_model(whisper)
    with pytest.raises(WrongModelKindError, match="transcribe jobs need one of: whisper"):
        kinds.get("transcribe").check_model({"name": "lcm", "version": "2", "kind": "lcm"})


def test_records_carry_the_kinds_unit_and_extra_fields() -> None:
    job = kinds.get("transcribe").spec.from_json(transcribe_message())
    outcome = Outcome("done", ["a.txt"], 12.5, 1.23456, extra={"language": "en"})
    rec = record(job, "done", outcome=outcome, attempts=2, worker="w1", unit="audio_s")
    assert rec["units"] == rec["audio_s"] == 12.5 and rec["language"] == "en" and rec["processing_s"] == 1.235
    assert (rec["job_id"], rec["relpath"], rec["attempts"], rec["worker"]) == ("j", "a.wav", 2, "w1")
    failed = record(None, "failed", job_id="x", display="bad.zip::a.wav", error="bad.zip::a.wav: unsafe path")
    assert failed["status"] == "failed" and failed["error"].endswith("unsafe path") and not failed["retryable"]


def test_a_planned_job_that_breaks_its_own_spec_fails_at_submission_and_the_rest_queue() -> None:
    from ovbatch.batches import MemoryBatchStore
    from ovbatch.storage.file import FileStore
    from ovbatch.submission import Plan, record_batch

    spec = kinds.get("txt2img").spec
    good = spec.from_json(image_message(job_id="good"))
    bad = msgspec.structs.replace(good, job_id="bad", steps=0)  # constructors do not validate
    batches = MemoryBatchStore()
    with tempfile.TemporaryDirectory() as folder:
        out = FileStore(Path(folder))
        sub = record_batch(kinds.get("txt2img"), "b", Plan(jobs=[good, bad]), batches, "file:///x/", lambda _: out)
    assert [job.job_id for job in sub.queued] == ["good"] and sub.failed == 1
    failed = batches.jobs("b")["bad"]
    assert failed["status"] == "failed" and "Expected `int` >= 1 - at `$.steps`" in failed["error"], failed


SPINE = ("workers", "cli/batch.py", "cli/progress.py", "ovbatch/batches.py", "ovbatch/inputs.py", "ovbatch/jobs.py")
SPINE += ("ovbatch/kinds.py", "ovbatch/submission.py", "ovbatch/settings.py")


def test_the_spine_imports_no_kind() -> None:
    """Generic modules reach kinds only through ovbatch.kinds (by name), never by import."""
    root = Path(__file__).resolve().parents[1]
    files = [p for part in SPINE for p in ([root / part] if part.endswith(".py") else (root / part).rglob("*.py"))]
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                # `from ovbatch.tasks import KINDS` (the names registry) is allowed, a kind's module is not
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names if not a.name.isupper()]
            if any(n.startswith(("ovbatch.tasks.", "tasks.")) for n in names):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert len(files) > 10 and not offenders, f"spine modules import a kind: {offenders}"
