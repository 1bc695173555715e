"""A job kind: the small explicit interface every kind of job declares (as arq lists its functions).

The worker, the Celery task per kind (``ovbatch.<kind>``), batch records, watch/status/results/
cancel/retry, embedded mode and the model cache work from this alone. Kinds are listed in
``ovbatch.tasks.KINDS`` (one line each) and imported when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ovbatch.errors import ConfigError, WrongModelKindError
from ovbatch.jobs import JobEnv, JobSpec, Outcome, Unit
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage import ObjectStore


@dataclass
class EngineLoad:
    """What an engine loader gets: the registry version to decrypt, and the worker's device settings."""

    registry: Registry
    ref: ModelRef
    manifest: dict[str, Any]
    core: Any
    device: str
    config: dict[str, Any]  # compile options (threads, pinning, precision)
    options: dict[str, Any]  # the kind's per-job engine options (resolution, adapters), part of the cache key
    grow: Callable[[int], None]  # the engine took more memory after loading (counted by the cache)
    concurrency: int = 1  # jobs the worker runs at once
    settings: Any = None  # the worker's Settings (a kind's own limits and pool sizes)


@dataclass
class Loaded:
    """A cached engine: what jobs use, its size for the cache's byte budget, and how to free it."""

    engine: Any
    size_bytes: int
    release: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class JobKind:
    name: str  # Celery task "ovbatch.<name>"
    spec: type[JobSpec]
    unit: Unit
    run: Callable[[Any, JobEnv], Outcome]  # one job: spec in, outputs in storage, outcome out
    finished: Callable[[Any, ObjectStore], Outcome | None]  # the earlier outcome if the marker is there
    engines: Mapping[str, Callable[[EngineLoad], Loaded]]  # manifest kind -> loader
    engine_options: Callable[[Any], dict[str, Any]] = lambda _job: {}
    # after the batch's last job (or at submission when nothing runs): extra batch outputs, e.g. a gallery
    finish_batch: Callable[[Any, str, ObjectStore], list[str]] | None = None
    # the click commands the kind adds to ``ovbatch`` (imported only by the CLI, never by workers)
    commands: Callable[[], tuple[Any, ...]] = lambda: ()
    # a dedicated kind (long, memory-heavy: quantization) has a queue of its own per device,
    # ``ovbatch.<kind>.<DEVICE>``, served only by workers started with ``--kinds <kind>``, one job at
    # a time; other kinds share ``ovbatch.<DEVICE>``
    dedicated: bool = False
    # an exclusive kind (benchmark runs) has its worker to itself: the worker finishes its running jobs
    # first and starts no other job until this one ends (workers/gate.py)
    exclusive: bool = False

    @property
    def task_name(self) -> str:
        return f"ovbatch.{self.name}"

    def queue(self, device: str) -> str:
        return f"ovbatch.{self.name}.{device}" if self.dedicated else f"ovbatch.{device}"

    def loader_for(self, manifest: dict[str, Any]) -> Callable[[EngineLoad], Loaded]:
        model_kind = manifest.get("kind", "generic")
        loader = self.engines.get(model_kind)
        if loader is None:
            raise WrongModelKindError(
                f"{manifest.get('name')}@{manifest.get('version')} is a {model_kind!r} model; "
                f"{self.name} jobs need one of: {', '.join(sorted(self.engines))}"
            )
        return loader

    def check_model(self, manifest: dict[str, Any]) -> None:
        """At submission: refuse a model this kind cannot run before any job is queued."""
        self.loader_for(manifest)


def get(name: str) -> JobKind:
    from ovbatch.tasks import KINDS

    if name not in KINDS:
        raise ConfigError(f"unknown job kind {name!r}; known: {', '.join(sorted(KINDS))}")
    kind = importlib.import_module(KINDS[name]).KIND
    assert isinstance(kind, JobKind) and kind.name == name, f"{KINDS[name]}.KIND must be the {name!r} JobKind"
    return kind


def all_kinds() -> list[JobKind]:
    from ovbatch.tasks import KINDS

    return [get(name) for name in KINDS]
