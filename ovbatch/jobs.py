"""What every job kind shares: the message base, the outcome, the one place a job's record is built,
and what a running job gets from its process (``JobEnv``).

A kind (tasks/<kind>/kind.py) adds its own spec fields, its run function and its engine; nothing
here knows about audio or images.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TypeVar

import msgspec

from ovbatch.errors import (
    BadMessageError,
    InputError,
    JobCancelled,
    JobTimeLimitExceeded,
    ObjectExists,
    ObjectNotFound,
    OutputTakenError,
    WorkerStopping,
)
from ovbatch.storage import ObjectStore

S = TypeVar("S", bound="JobSpec")


class JobSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The fields every job message carries: references only (storage URLs, name@version), never
    input bytes, model bytes or keys. Kinds subclass it with their own typed fields."""

    batch_id: str
    job_id: str
    display: str  # what the user named, for messages
    relpath: str  # the path outputs mirror under out_url
    model: str  # name@version, resolved at submission
    device: str
    out_url: str
    # outputs another job (another batch's model or options) already wrote under these names are
    # replaced only when the user said so (``--overwrite``); see ``claim_outputs``
    overwrite: bool = False

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)

    @classmethod
    def from_json(cls: type[S], data: Any) -> S:
        """Validate a message strictly: unknown fields, wrong types and out-of-range values are refused."""
        try:
            return msgspec.convert(data, cls, strict=True)
        except msgspec.ValidationError as exc:
            raise BadMessageError(f"{cls.__name__} message refused: {exc}") from None

    @property
    def marker_key(self) -> str:
        """Written after every output: its presence means this job is finished."""
        return f".ovbatch/jobs/{self.job_id}.json"

    def output_keys(self) -> list[str]:
        """The output names this job writes under ``out_url``, where they follow from its input (a
        kind whose names are unique per job, a benchmark run's, returns none)."""
        return []


def job_id_of(material: list[Any]) -> str:
    """A job's deterministic id: the hash of what makes it this job (content digests, options, its
    destination), so a resubmission finds the jobs it ran before. Ids must not change between
    releases: a changed id reruns work that was done."""
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:32]


OWNERS = ".ovbatch/owners/"


def _owner_of(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        owner = json.loads(store.get_bytes(OWNERS + key))
    except ObjectNotFound:
        return None
    except ValueError:
        return {"job_id": "?", "display": "?", "batch_id": "?", "model": "?"}
    return owner if isinstance(owner, dict) else None


def output_taken(store: ObjectStore, job: JobSpec) -> str | None:
    """Why ``job`` may not write its outputs, or None: one of its output names belongs to another job
    (two batches with other models or options into one ``--out``) and ``overwrite`` is not set."""
    if job.overwrite:
        return None
    for key in job.output_keys():
        owner = _owner_of(store, key)
        if owner is not None and owner.get("job_id") != job.job_id:
            return (
                f"{job.display}: {key} already holds the output of {owner.get('display')} (batch "
                f"{owner.get('batch_id')}, {owner.get('model')}, other options or model); write to another "
                "--out, or pass --overwrite to replace it"
            )
    return None


def claim_outputs(store: ObjectStore, job: JobSpec) -> None:
    """Take ownership of the job's output names before writing any: a create-only write per name, so
    of two jobs racing for one name (two batches at once), one wins and the other fails with the
    reason (``OutputTakenError``) instead of both reporting done with one output lost."""
    mine = json.dumps(
        {"job_id": job.job_id, "batch_id": job.batch_id, "display": job.display, "model": job.model}
    ).encode()
    for key in job.output_keys():
        if job.overwrite:
            store.put_bytes(OWNERS + key, mine)
            continue
        try:
            store.put_bytes(OWNERS + key, mine, if_absent=True)
        except ObjectExists:
            reason = output_taken(store, job)
            if reason is not None:
                raise OutputTakenError(reason) from None


def release_outputs(store: ObjectStore, job: JobSpec) -> None:
    """Give back the names a job claimed but did not write (it failed or was cancelled)."""
    for key in job.output_keys():
        owner = _owner_of(store, key)
        if owner is not None and owner.get("job_id") == job.job_id:
            store.delete(OWNERS + key)


@dataclass(frozen=True)
class Unit:
    """What a kind's progress counts, and how the CLI shows it."""

    name: str  # the record and batch field summed over done jobs: "audio_s", "images"
    label: str  # "s of audio", "images"
    rate: str  # "x real time", "images/min"
    rate_per_s: float = 1.0  # units per second times this is the shown rate (60 for per minute)
    work: str | None = None  # a finer count reported while jobs run ("steps"), if any


@dataclass
class Outcome:
    status: str  # done, failed, cancelled
    outputs: list[str] = field(default_factory=list)
    units: float = 0.0  # the kind's unit: audio seconds, images
    processing_s: float = 0.0
    error: str | None = None
    reused: bool = False  # outputs were already there (a redelivery or resubmission)
    retryable: bool = False  # bad input is never retried; infrastructure failures may be
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific record fields


def record(
    job: JobSpec | None,
    status: str,
    *,
    outcome: Outcome | None = None,
    attempts: int = 0,
    worker: str | None = None,
    unit: str | None = None,
    display: str = "",
    job_id: str = "",
    error: str | None = None,
) -> dict[str, Any]:
    """A job's record in its batch: the only place one is built. ``job`` is None for an input that
    failed before it became a job (then ``job_id`` and ``display`` name it)."""
    outcome = outcome or Outcome(status, error=error)
    rec: dict[str, Any] = {
        "job_id": job.job_id if job else job_id,
        "display": job.display if job else display,
        "relpath": job.relpath if job else display,
        "status": status,
        "outputs": list(outcome.outputs),
        "units": outcome.units,
        "processing_s": round(outcome.processing_s, 3),
        "error": outcome.error,
        "attempts": attempts,
        "retryable": outcome.retryable,
    }
    if unit:  # the kind's own name for its units, as the records have always shown it
        rec[unit] = outcome.units
    if worker:
        rec["worker"] = worker
    rec.update(outcome.extra)
    return rec


def write_marker(store: ObjectStore, job: JobSpec, outcome: Outcome) -> None:
    """After every output: the job's marker, so a redelivery or resubmission finds it finished."""
    marker = {"outputs": outcome.outputs, "processing_s": outcome.processing_s, "extra": outcome.extra}
    store.put_bytes(job.marker_key, json.dumps(marker).encode())


def read_marker(job: JobSpec, store: ObjectStore, units: float = 1.0) -> Outcome | None:
    """The outcome ``write_marker`` recorded for ``job``, or None if it has none (or an unreadable one)."""
    try:
        data = json.loads(store.get_bytes(job.marker_key))
        return Outcome("done", data["outputs"], units, data["processing_s"], reused=True, extra=data.get("extra", {}))
    except Exception:
        return None


J = TypeVar("J", bound=JobSpec)


def begin(
    job: J,
    env: JobEnv,
    finished: Callable[[J, ObjectStore], Outcome | None],
    what: str,
    extra: dict[str, Any] | None = None,
) -> ObjectStore | Outcome:
    """How every kind's ``run`` starts. A job of a cancelled batch ends before it starts (``what``
    names it: "this file", "this image"; ``extra``: the record fields it still carries); a job that
    finished before (a redelivery, a resubmission) returns the outcome its kind's ``finished`` reads
    back. Otherwise: the store the job writes its outputs to."""
    if env.is_cancelled(job.batch_id):
        return Outcome("cancelled", error=f"batch cancelled before {what} started", extra=dict(extra or {}))
    out = env.out_store(job.out_url)
    earlier = finished(job, out)
    return out if earlier is None else earlier


# what ends a job early without being an infrastructure error (those raise, and WorkerStopping
# raises: the job goes back to its queue): ``stopped`` turns each into the job's outcome
STOPS: tuple[type[Exception], ...] = (InputError, JobCancelled, JobTimeLimitExceeded)


def named(name: str, exc: Exception) -> str:
    """An error's message led by what the user named (the file, the prompt), once."""
    text = str(exc)
    return text if text.startswith(name) else f"{name}: {text}"


def stopped(exc: Exception, started: float, *, name: str | None = None, extra: dict[str, Any] | None = None) -> Outcome:
    """The outcome of a job ended by one of ``STOPS`` (``started``: its ``time.perf_counter()`` at the
    start): bad input fails it for good (its message led by ``name``, if given); a cancel cancels it;
    the time limit fails it as retryable: not the input's fault, ``ovbatch retry`` may rerun it on a
    faster worker."""
    processing_s = time.perf_counter() - started
    extra = dict(extra or {})
    if isinstance(exc, JobCancelled):
        return Outcome("cancelled", error=str(exc), processing_s=processing_s, extra=extra)
    if isinstance(exc, JobTimeLimitExceeded):
        return Outcome("failed", error=str(exc), processing_s=processing_s, retryable=True, extra=extra)
    if isinstance(exc, InputError):
        error = named(name, exc) if name else str(exc)
        return Outcome("failed", error=error, processing_s=processing_s, extra=extra)
    raise TypeError(f"not a job stop: {exc!r}") from exc


@dataclass
class Watch:
    """A running job's stop conditions: its time limit, its batch's cancellation, its worker's
    shutdown. ``check()`` is called between blocks of audio or denoising steps."""

    display: str
    deadline: float | None
    limit_s: float | None
    cancelled: Callable[[], bool]
    every_s: float = 5.0
    stopping: Callable[[], bool] = lambda: False
    _next: float = 0.0

    def __post_init__(self) -> None:
        # the first check asks at once: a batch cancelled while the job loaded its model stops
        # before any work, not one interval later
        self._next = time.monotonic()

    def check(self, doing: str = "this job was running") -> None:
        if self.stopping():
            raise WorkerStopping(f"{self.display}: the worker is shutting down; the job goes back to its queue")
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise JobTimeLimitExceeded(
                f"{self.display}: stopped after the job time limit of {self.limit_s:g} s (OVBATCH_JOB_TIME_LIMIT_S)"
            )
        if now >= self._next:
            self._next = now + self.every_s
            if self.cancelled():
                raise JobCancelled(f"{self.display}: batch cancelled while {doing}")


@dataclass
class JobEnv:
    """What a job needs from its process: storage, its engine, the batch state and its stop checks."""

    open_input: Callable[[str], BinaryIO]
    out_store: Callable[[str], ObjectStore]
    engine_for: Callable[[JobSpec], Any]  # the kind's engine for this job, from the worker's cache
    is_cancelled: Callable[[str], bool]
    # Celery enforces task_time_limit only in its prefork pool (celery#9203), and our workers use
    # threads: the job enforces the limit itself, between blocks or steps (``Watch``)
    time_limit_s: float | None = None
    cancel_check_s: float = 5.0  # how often a running job asks whether its batch was cancelled
    # set when the worker is told to stop (SIGTERM): running jobs end at their next block and go
    # back to the queue at once, instead of holding a scale-down for hours
    stopping: Callable[[], bool] = lambda: False
    progress: Callable[[float], None] = lambda _work: None  # finer work done (the kind's Unit.work)
    stage: Callable[[str], None] = lambda _text: None  # what a long job does now, shown by `watch`
    settings: Any = None  # the worker's Settings: limits come from the worker, not the message

    def watch(self, job: JobSpec, cancel_check_s: float | None = None) -> Watch:
        """Started when the job's own work starts: a cold model load is not counted. A kind whose
        blocks of work are long (a denoising step) asks its batch at every check: ``cancel_check_s=0``."""
        limit = self.time_limit_s
        deadline = time.monotonic() + limit if limit else None
        return Watch(
            job.display,
            deadline,
            limit,
            lambda: self.is_cancelled(job.batch_id),
            self.cancel_check_s if cancel_check_s is None else cancel_check_s,
            self.stopping,
        )
