"""How a transcription submission expands into jobs: inputs -> uploaded, deterministic jobs.

One job per audio file; its id hashes the audio's sha256, the model version, the options and the
destination, so submitting the same batch again skips what is finished (ovbatch/submission.py).
"""

from __future__ import annotations

import gzip
import lzma
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

from ovbatch import inputs as inputs_mod
from ovbatch.registry.refs import ModelRef
from ovbatch.registry.registry import Registry
from ovbatch.storage import ObjectStore
from ovbatch.submission import Failure, Plan
from ovbatch.tasks.transcribe.spec import UPLOADED, TranscribeJob, job_id_for
from ovbatch.tasks.transcribe.types import FORMATS, Format, TranscribeOptions


def _reference(registry_store: ObjectStore, item: Any) -> tuple[str, str]:
    """(input_url, sha256): S3 objects are referenced where they are; local files are uploaded."""
    if item.display.startswith("s3://") and "::" not in item.display and "!" not in item.display:
        with item.open() as stream:
            digest, _size = inputs_mod.content_digest(stream)
        return item.display, digest
    key = inputs_mod.upload_content_addressed(registry_store, item)
    return UPLOADED + key, key.rsplit("/", 1)[-1]


_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, gzip.BadGzipFile, EOFError, zlib.error, lzma.LZMAError)


def _unreadable(display: str, exc: Exception) -> str:
    """Why an input could not be read at submission, naming it once."""
    if isinstance(exc, _DAMAGED):  # a member whose bytes do not match its archive's records
        return f"{display}: the archive is damaged ({exc})"
    message = str(exc)
    return message if message.startswith(display) else f"{display}: {message}"


def output_names(items: list[Any], result: Plan, progress: Callable[[str], None]) -> dict[str, bool]:
    """The naming rule for outputs, per input relpath (True: keep the extension).

    Outputs are named after the input without its extension (``a.wav`` -> ``a.txt``), except where
    that would write over another output of the batch or over ovbatch's own files: inputs with the
    same name up to the extension (``a.wav``, ``a.flac``) and top-level inputs named ``batch-*`` (the
    batch reports) keep it (``a.wav.txt``, ``a.flac.txt``). Inputs under ``.ovbatch/`` (the job
    markers' folder) are refused. Every other output name is unique within the batch.
    """
    stems: dict[str, list[str]] = {}
    names: dict[str, bool] = {}
    for item in items:
        path = PurePosixPath(item.relpath)
        if path.parts and path.parts[0] == ".ovbatch":
            result.failures.append(
                Failure(
                    item.display,
                    f"{item.display}: inputs under .ovbatch/ would write into ovbatch's own "
                    "bookkeeping folder of --out; rename that folder",
                )
            )
            continue
        stems.setdefault(str(path.with_suffix("")), []).append(item.relpath)
        names[item.relpath] = len(path.parts) == 1 and path.name.startswith("batch-")
    for relpaths in stems.values():
        if len(relpaths) > 1:
            for relpath in relpaths:
                names[relpath] = True
            progress(
                f"{', '.join(relpaths)}: the same name but for the extension, so their outputs keep it "
                f"({relpaths[0]}.txt, ...)"
            )
    return names


def plan(
    sources: list[str],
    *,
    batch_id: str,
    registry: Registry,
    out_url: str,
    model: str,
    device: str,
    options: TranscribeOptions,
    formats: tuple[Format, ...] = FORMATS,
    max_audio_duration_s: float | None = None,
    s3_endpoint_url: str | None = None,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Plan:
    """Enumerate and upload the inputs; one job per audio file (the caller records the batch)."""
    ref = registry.resolve(ModelRef.parse(model))
    items, problems = inputs_mod.enumerate_inputs(sources, s3_endpoint_url=s3_endpoint_url)
    result = Plan(failures=[Failure(p.display, p.reason) for p in problems])
    keep = output_names(items, result, progress)
    for item in items:
        if item.relpath not in keep:  # refused by output_names
            continue
        progress(item.display)
        try:
            input_url, digest = _reference(registry.store, item)
        except Exception as exc:  # an unreadable file fails alone; the batch goes on
            result.failures.append(Failure(item.display, _unreadable(item.display, exc)))
            continue
        result.jobs.append(
            TranscribeJob(
                batch_id=batch_id,
                job_id=job_id_for(digest, str(ref), options, formats, out_url, item.relpath, keep[item.relpath]),
                input_url=input_url,
                input_sha256=digest,
                display=item.display,
                relpath=item.relpath,
                model=str(ref),
                device=device,
                out_url=out_url,
                formats=formats,
                options=options,
                max_audio_duration_s=max_audio_duration_s,
                keep_extension=keep[item.relpath],
            )
        )
    result.meta = {
        "model": str(ref),
        "device": device,
        "formats": list(formats),
        "options": options.to_json(),
        "sources": sources,
    }
    return result
