"""Calibration and evaluation sets: built at submission from storage like any input, read by the job.

What a set may be, per model kind:

* Whisper (audio): files, folders, globs, zip/tar archives, ``s3://`` prefixes and ``@list``
  manifests, as ``ovbatch transcribe`` takes them. References, where there are any: a ``.txt``
  beside each audio file (same stem; local files and S3 objects), a ``references.json``
  (``{"file name": "text"}``) in a folder given as a source, or a ``.jsonl`` / ``.csv`` / ``.tsv``
  manifest with an ``audio`` (or ``path``/``file``) column and a ``text`` (or ``reference``/
  ``transcript``) column, paths relative to the manifest. A set has references for every file or
  for none: without them the gate compares the quantized model with its parent's own transcripts.
* Diffusion (prompts): a prompts file as ``ovbatch txt2img`` reads it (.txt, .jsonl, .csv) or inline text.
* Any OpenVINO IR (tensors): ``.npz`` files (a folder of them, or single files): one sample each,
  arrays named after the model's inputs (or ``arr_0``.. in input order).

The set is uploaded once, content-addressed: the items (also content-addressed uploads) and their
references go into one small JSON object whose sha256 names the set in the job id and the lineage.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, cast

from ovbatch import inputs as inputs_mod
from ovbatch.errors import BadInputError
from ovbatch.storage import ObjectStore
from ovbatch.tasks.quantize.spec import DatasetRef

FORMAT = 1
AUDIO_COLUMNS = ("audio", "path", "file")
TEXT_COLUMNS = ("text", "reference", "transcript", "sentence")
MAX_ITEMS = 10_000


@dataclass(frozen=True)
class Item:
    name: str  # what the user named (path, archive member, URL): for reports
    url: str | None  # the item's bytes (audio, .npz); None for a prompt
    sha256: str | None
    text: str | None  # the reference transcript, or the prompt


@dataclass(frozen=True)
class Dataset:
    kind: str  # audio, prompts, tensors
    items: list[Item]

    @property
    def references(self) -> bool:
        return self.kind == "audio" and all(i.text is not None for i in self.items)


# --- submission ----------------------------------------------------------------------------------


def _upload(store: ObjectStore, item: inputs_mod.InputItem) -> tuple[str, str]:
    key = inputs_mod.upload_content_addressed(store, item)
    return inputs_mod.UPLOADED + key, key.rsplit("/", 1)[-1]


def _rows(path: Path) -> list[dict[str, str]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise BadInputError(f"{path} line {number}: not JSON ({exc})") from None
                if not isinstance(row, dict):
                    raise BadInputError(f"{path} line {number}: each line must be a JSON object")
                rows.append({str(k): str(v) for k, v in row.items() if v is not None})
        return rows
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    return [dict(r) for r in csv.DictReader(io.StringIO(text), delimiter=delimiter)]


def _column(row: dict[str, str], names: tuple[str, ...]) -> str | None:
    lowered = {k.strip().lower(): v for k, v in row.items() if k}
    return next((lowered[n] for n in names if lowered.get(n) not in (None, "")), None)


def _sidecar_text(item: inputs_mod.InputItem, s3_endpoint_url: str | None) -> str | None:
    """The ``.txt`` beside an audio file or S3 object, if there is one."""
    from ovbatch.storage import open_object

    display = item.display
    if "::" in display:  # an archive member: references come from a manifest instead
        return None
    if display.startswith("s3://"):
        url = display.rsplit(".", 1)[0] + ".txt"
        try:
            with open_object(url, s3_endpoint_url=s3_endpoint_url) as stream:
                return stream.read().decode("utf-8").strip()
        except Exception:
            return None
    path = Path(display).with_suffix(".txt")
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _folder_references(sources: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for source in sources:
        refs = Path(source) / "references.json"
        if refs.is_file():
            try:
                data = json.loads(refs.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise BadInputError(f"{refs}: not valid JSON ({exc})") from None
            if not isinstance(data, dict):
                raise BadInputError(f"{refs}: must map file names to their transcripts")
            for name, text in data.items():
                found[str(Path(source) / name)] = str(text)
    return found


def audio_items(sources: list[str], store: ObjectStore, s3_endpoint_url: str | None = None) -> list[Item]:
    """Every audio item of ``sources`` uploaded, with its reference where one is found."""
    manifests = [s for s in sources if Path(s).suffix.lower() in (".jsonl", ".csv", ".tsv") and Path(s).is_file()]
    plain = [s for s in sources if s not in manifests]
    items: list[Item] = []
    for manifest in manifests:
        path = Path(manifest)
        for number, row in enumerate(_rows(path), 1):
            audio = _column(row, AUDIO_COLUMNS)
            if audio is None:
                raise BadInputError(f"{path} row {number}: no audio column ({'/'.join(AUDIO_COLUMNS)})")
            target = audio if audio.startswith("s3://") else str(path.parent / audio)
            found, problems = inputs_mod.enumerate_inputs([target], s3_endpoint_url=s3_endpoint_url)
            if problems or len(found) != 1:
                reason = problems[0].reason if problems else "not one audio file"
                raise BadInputError(f"{path} row {number}: {reason}")
            url, digest = _upload(store, found[0])
            items.append(Item(found[0].display, url, digest, _column(row, TEXT_COLUMNS)))
    if plain:
        found, problems = inputs_mod.enumerate_inputs(plain, s3_endpoint_url=s3_endpoint_url)
        if problems:
            raise BadInputError("; ".join(p.reason for p in problems[:5]))
        by_folder = _folder_references(plain)
        for entry in found:
            url, digest = _upload(store, entry)
            text = by_folder.get(entry.display)
            if text is None:
                text = _sidecar_text(entry, s3_endpoint_url)
            items.append(Item(entry.display, url, digest, text))
    return items


def prompt_items(sources: list[str]) -> list[Item]:
    from ovbatch.tasks.imagegen.prompts import PromptDefaults, read_prompts

    rows, problems = read_prompts(sources, PromptDefaults())
    if problems:
        raise BadInputError("; ".join(p.reason for p in problems[:5]))
    return [Item(row.source, None, None, row.prompt) for row in rows]


def tensor_items(sources: list[str], store: ObjectStore) -> list[Item]:
    items: list[Item] = []
    for source in sources:
        path = Path(source)
        files = sorted(path.rglob("*.npz")) if path.is_dir() else [path]
        if not files:
            raise BadInputError(f"{source}: no .npz files in this folder")
        for file in files:
            if not file.is_file():
                raise BadInputError(f"{file}: no such file")
            if file.suffix.lower() != ".npz":
                raise BadInputError(f"{file}: calibration tensors must be .npz files (numpy.savez)")
            opener = cast(Callable[[], BinaryIO], partial(open, file, "rb"))
            entry = inputs_mod.InputItem(file.name, str(file), opener, file.stat().st_size)
            url, digest = _upload(store, entry)
            items.append(Item(str(file), url, digest, None))
    return items


def build(kind: str, sources: list[str], store: ObjectStore, s3_endpoint_url: str | None = None) -> DatasetRef:
    """Enumerate, upload and describe a set; raises ``BadInputError`` naming the bad source."""
    if kind == "audio":
        items = audio_items(sources, store, s3_endpoint_url)
    elif kind == "prompts":
        items = prompt_items(sources)
    elif kind == "tensors":
        items = tensor_items(sources, store)
    else:
        raise ValueError(f"unknown dataset kind {kind!r}")
    if not items:
        raise BadInputError(f"{', '.join(sources)}: no {kind} found")
    if len(items) > MAX_ITEMS:
        raise BadInputError(f"{', '.join(sources)}: {len(items)} items; a set holds at most {MAX_ITEMS}")
    with_text = [i for i in items if i.text is not None]
    if kind == "audio" and with_text and len(with_text) != len(items):
        missing = [i.name for i in items if i.text is None]
        raise BadInputError(
            f"{len(missing)} of {len(items)} audio files have no reference transcript ({', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}): give every file one, or none (the gate then compares "
            "with the parent model's own transcripts)"
        )
    dataset = Dataset(kind, items)
    body = json.dumps(
        {"format": FORMAT, "kind": kind, "items": [i.__dict__ for i in items]}, sort_keys=True, indent=1
    ).encode()
    entry = inputs_mod.InputItem("dataset.json", "dataset.json", lambda: io.BytesIO(body), len(body))
    url, digest = _upload(store, entry)
    return DatasetRef(url=url, sha256=digest, items=len(items), references=dataset.references)


# --- the job's side --------------------------------------------------------------------------------


def load(open_input: Any, ref: DatasetRef) -> Dataset:
    import hashlib

    with open_input(ref.url) as stream:
        body = stream.read()
    if hashlib.sha256(body).hexdigest() != ref.sha256:
        raise BadInputError(f"dataset {ref.url}: its content does not match its digest")
    data = json.loads(body)
    return Dataset(data["kind"], [Item(**i) for i in data["items"]])
