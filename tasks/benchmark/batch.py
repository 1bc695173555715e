"""After a benchmark batch's last run: ``<batch>/runs.csv``, the plots and ``<batch>/index.html``.

Every run's JSON is read back from the output store (a run that failed before measuring has its
record's error instead), so the table has one row per run whatever happened to it.
"""

from __future__ import annotations

import json
from typing import Any

from ovbatch.batches import BatchStore
from ovbatch.errors import ObjectNotFound
from ovbatch.storage import ObjectStore
from ovbatch.tasks.benchmark import plots
from ovbatch.tasks.benchmark.spec import BenchmarkJob


def load_runs(batches: BatchStore, batch_id: str, out: ObjectStore) -> list[dict[str, Any]]:
    records = batches.jobs(batch_id)
    runs = []
    for jid, spec in batches.specs(batch_id).items():
        job = BenchmarkJob.from_json(spec)
        try:
            runs.append(json.loads(out.get_bytes(job.report_key)))
        except (ObjectNotFound, ValueError):
            rec = records.get(jid, {})
            runs.append(
                {
                    "run_id": job.run_id,
                    "status": rec.get("status", "failed"),
                    "model": job.model,
                    "part": job.part,
                    "config": job.configuration(),
                    "sweep": dict(job.sweep),
                    "error": rec.get("error"),
                }
            )
    for jid, rec in records.items():  # configurations refused at submission
        if jid not in batches.specs(batch_id):
            runs.append({"run_id": rec["display"], "status": "failed", "config": {}, "error": rec.get("error")})
    return sorted(runs, key=lambda r: str(r["run_id"]))


def finish(batches: BatchStore, batch_id: str, out: ObjectStore) -> list[str]:
    runs = load_runs(batches, batch_id, out)
    return plots.write_all(runs, out, f"ovbatch benchmark {batch_id}", prefix=f"{batch_id}/")
