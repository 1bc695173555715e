"""After a txt2img batch's last image: a contact sheet per prompt row and the ``index.html`` gallery."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any

import numpy as np

from ovbatch.batches import BatchStore
from ovbatch.errors import ObjectNotFound
from ovbatch.storage import ObjectStore
from ovbatch.tasks.imagegen import gallery
from ovbatch.tasks.imagegen.prompts import slug
from ovbatch.tasks.imagegen.spec import ImageJob

INDEX = "index.html"


def finish(batches: BatchStore, batch_id: str, out: ObjectStore) -> list[str]:
    records = batches.jobs(batch_id)
    specs = {jid: ImageJob.from_json(spec) for jid, spec in batches.specs(batch_id).items()}
    rows: dict[int, list[ImageJob]] = defaultdict(list)
    for job in specs.values():
        rows[job.row].append(job)
    written: list[str] = []
    entries = []
    for row, jobs in sorted(rows.items()):
        jobs.sort(key=lambda j: j.seed)
        sheet = _sheet(out, row, jobs, records)
        if sheet:
            written.append(sheet)
        entries.append(_entry(jobs, records, sheet))
    for jid, rec in records.items():  # rows that failed before they became jobs
        if jid not in specs:
            entries.append(gallery.GalleryEntry(0, rec["display"], "", error=rec.get("error") or "failed"))
    out.put_bytes(INDEX, gallery.index_html(batch_id, entries).encode("utf-8"))
    return [*written, INDEX]


def _done(job: ImageJob, records: dict[str, dict[str, Any]]) -> bool:
    return records.get(job.job_id, {}).get("status") in ("done", "skipped")


def _sheet(out: ObjectStore, row: int, jobs: list[ImageJob], records: dict[str, dict[str, Any]]) -> str | None:
    """The row's images side by side (only when it has more than one)."""
    images = []
    for job in jobs:
        if not _done(job, records):
            continue
        try:
            images.append((job.seed, _pixels(out.get_bytes(job.relpath))))
        except ObjectNotFound:  # removed since: the sheet shows the others
            continue
    if len(images) < 2:
        return None
    key = f"{row:04d}-contact-{slug(jobs[0].prompt)}.png"
    out.put_bytes(key, gallery.contact_sheet(images, f"{jobs[0].source}: {jobs[0].prompt}"))
    return key


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def _entry(jobs: list[ImageJob], records: dict[str, dict[str, Any]], sheet: str | None) -> gallery.GalleryEntry:
    first = jobs[0]
    images = tuple(
        gallery.GalleryImage(
            job.seed,
            job.relpath,
            error=None if _done(job, records) else (records.get(job.job_id, {}).get("error") or "not made"),
        )
        for job in jobs
    )
    return gallery.GalleryEntry(
        first.row,
        first.source,
        first.prompt,
        first.negative_prompt,
        gallery.settings_of(first),
        images,
        sheet=sheet,
    )
