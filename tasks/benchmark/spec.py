"""The benchmark job message: one configuration of one model (a registry version's IR file), by reference.

Every field is typed and ranged; a sweep is many such messages in one batch. Each run is a new
measurement: the job id includes the batch, so resubmitting measures again, while a redelivered
message of the same batch finds its earlier result.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

import msgspec

from ovbatch.jobs import JobSpec, job_id_of

Digest = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
ShapeSpec = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:/\-\[\]?,\s]{1,400}$")]


class BenchmarkJob(JobSpec, frozen=True, kw_only=True, forbid_unknown_fields=True):
    model_digest: Digest
    part: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_./-]{1,200}\.xml$")]  # the IR file of the version
    hint: Literal["latency", "throughput", "cumulative_throughput", "none"] = "throughput"
    nireq: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None
    nstreams: Annotated[int, msgspec.Meta(ge=1, le=256)] | None = None
    batch: Annotated[int, msgspec.Meta(ge=1, le=4096)] | None = None
    shape: ShapeSpec | None = None
    data_shape: ShapeSpec | None = None
    time_s: Annotated[float, msgspec.Meta(gt=0, le=24 * 3600)] | None = None
    niter: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] | None = None
    infer_precision: Literal["f32", "bf16", "f16"] | None = None
    api: Literal["sync", "async"] = "async"
    percentiles: tuple[Annotated[int, msgspec.Meta(ge=1, le=100)], ...] = (50, 90, 99)
    counters: bool = False
    repeat: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1  # this run's number among repeats of one configuration
    sweep: dict[str, str] = msgspec.field(
        default_factory=dict
    )  # the sweep values that chose this configuration (for tables and plots)

    @property
    def run_id(self) -> str:
        return self.relpath

    @property
    def report_key(self) -> str:
        return f"{self.run_id}.json"

    @property
    def csv_key(self) -> str:
        return f"{self.run_id}/benchmark_report.csv"

    def configuration(self) -> dict[str, object]:
        """What was asked for, as the report and the tables show it."""
        return {
            "model": self.model,
            "part": self.part,
            "device": self.device,
            "hint": self.hint,
            "nireq": self.nireq,
            "nstreams": self.nstreams,
            "batch": self.batch,
            "shape": self.shape,
            "data_shape": self.data_shape,
            "time_s": self.time_s,
            "niter": self.niter,
            "infer_precision": self.infer_precision,
            "api": self.api,
            "percentiles": list(self.percentiles),
            "counters": self.counters,
        }


def config_key(job_fields: dict[str, object]) -> str:
    """Runs of the same configuration share this key (repeats are grouped by it)."""
    return hashlib.sha256(json.dumps(job_fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def job_id_for(batch_id: str, model_digest: str, configuration: dict[str, object], repeat: int, out_url: str) -> str:
    material = [batch_id, model_digest, sorted(configuration.items()), repeat, out_url.rstrip("/")]
    return job_id_of(material)
