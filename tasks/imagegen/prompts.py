"""The prompts of a ``txt2img`` batch: inline strings and prompt files, read into checked ``PromptRow``s.

``read_prompts(sources, defaults)`` gives ``(rows, problems)``; a bad row or file never stops the others.
Each source is one of:

* a ``.txt`` file: one prompt per line; blank lines and lines starting with ``#`` are skipped.
* a ``.jsonl`` file: one JSON object per line with fields from ``FIELDS`` (``prompt`` required);
  ``seeds`` is a list of ints, an int or a string like ``"0-3,7"``; ``loras`` is a list of
  ``"name[@version][:alpha]"`` strings or ``{"name", "alpha"}`` objects. An absent or null field
  takes the default; an unknown one is a problem for its row.
* a ``.csv`` file whose header names columns from ``FIELDS`` (``prompt`` required); seeds as
  ``0-3,7``, loras as ``style@2:0.8;other:0.5``. An empty cell takes the default.
* anything else: the prompt itself. One word ending in ``.txt``/``.jsonl``/``.csv`` is always a file
  name (a missing one is a problem), and so is an existing file with another suffix.

Rows are numbered from 1 across all sources in order. A bad row keeps its number, so fixing it does not
rename the outputs of the rows after it. A source reads ``prompts.csv:4`` (the line the row starts
on) or ``inline 2`` (the second of the sources). ``check_for_model`` checks what depends on the model.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ovbatch.errors import InputError
from ovbatch.tasks.imagegen.values import (
    FIELDS,
    SIDE_STEP,
    LoraUse,
    check_alpha,
    check_seeds,
    cli_seeds,
    csv_value,
    json_type,
    nearest,
    number_reasons,
    parse_field,
    parse_lora,
    parse_scheduler,
    parse_seeds,
)

__all__ = [
    "FIELDS",
    "LoraUse",
    "PromptDefaults",
    "PromptRow",
    "Prompts",
    "RowProblem",
    "check_defaults",
    "check_for_model",
    "cli_seeds",
    "image_stem",
    "parse_lora",
    "parse_scheduler",
    "parse_seeds",
    "read_prompts",
    "slug",
]

FILE_SUFFIXES = (".txt", ".jsonl", ".csv")
SLUG_CHARS = 40


@dataclass(frozen=True)
class PromptDefaults:
    """What a row gets for each field it does not set: the CLI's options."""

    negative_prompt: str = ""
    seeds: tuple[int, ...] = (0,)
    steps: int = 20
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    loras: tuple[LoraUse, ...] = ()
    scheduler: str | None = None  # None: the model's own


@dataclass(frozen=True)
class PromptRow:
    row: int  # from 1, unique across all sources
    source: str  # "prompts.csv:3", "inline 2"
    prompt: str
    negative_prompt: str
    seeds: tuple[int, ...]
    steps: int
    guidance: float
    width: int
    height: int
    loras: tuple[LoraUse, ...]
    scheduler: str | None


@dataclass(frozen=True)
class RowProblem:
    source: str  # "prompts.csv:4", or the file's name for the whole file
    reason: str  # starts with the source: "prompts.csv:4: width 500 is not a multiple of 8 (use 496 or 504)"


class Prompts(NamedTuple):
    rows: list[PromptRow]
    problems: list[RowProblem]


def read_prompts(sources: Iterable[str], defaults: PromptDefaults) -> Prompts:
    """Every row and every problem of ``sources``, in order; see the module docstring.

    Raises ``InputError`` when the defaults themselves are unusable (see ``check_defaults``).
    """
    check_defaults(defaults)
    reader = _Reader(defaults)
    for position, source in enumerate(sources, 1):
        reader.add(source, position)
    return Prompts(reader.rows, reader.problems)


def check_defaults(defaults: PromptDefaults) -> None:
    """``InputError`` naming each CLI option whose value no row could use (``--width 500 is ...``)."""
    d = defaults
    reasons = number_reasons(d.width, d.height, d.steps, d.guidance, prefix="--")
    try:
        parse_field("negative_prompt", d.negative_prompt)
        check_seeds(d.seeds)
        for use in d.loras:
            check_alpha(use.alpha, use.ref)
        if d.scheduler is not None and parse_scheduler(d.scheduler) != d.scheduler:
            raise InputError(f"--scheduler {d.scheduler!r}: spell it {parse_scheduler(d.scheduler)}")
    except InputError as exc:
        reasons.append(str(exc))
    if reasons:
        raise InputError("; ".join(reasons))


def check_for_model(row: PromptRow, max_side: int, multiple_of: int = SIDE_STEP) -> str | None:
    """Why the model cannot make ``row``'s size (the row's source in front), or None when it can."""
    size = f"{row.width}x{row.height}"
    if max(row.width, row.height) > max_side:
        return f"{row.source}: {size} is over the limit of {max_side} px a side (OVBATCH_MAX_IMAGE_SIDE)"
    if row.width % multiple_of or row.height % multiple_of:
        fit = f"width {nearest(row.width, multiple_of)}, height {nearest(row.height, multiple_of)}"
        return f"{row.source}: {size} is not a size this model makes: it needs multiples of {multiple_of} ({fit})"
    return None


def slug(prompt: str) -> str:
    """The prompt's ascii words, lowercase, joined by ``-``, at most 40 characters; else ``image``."""
    ascii_text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode().lower()
    text = "-".join(re.findall(r"[a-z0-9]+", ascii_text))
    if len(text) > SLUG_CHARS:
        cut = text[: SLUG_CHARS + 1]  # one more, so a word ending right at the limit is kept whole
        text = cut.rsplit("-", 1)[0] if "-" in cut else cut[:SLUG_CHARS]
    return text or "image"


def image_stem(row: int, seed: int, prompt: str) -> str:
    """``0003-42-a-red-fox``: sorts by row, unique per row and seed."""
    return f"{row:04d}-{seed}-{slug(prompt)}"


def _build_row(
    number: int, source: str, given: dict[str, Any], defaults: PromptDefaults, from_csv: bool = False
) -> PromptRow:
    """The row from the fields ``given`` (absent or None: the default); ``InputError`` lists every problem.

    ``from_csv``: the values are CSV cells, text to convert, rather than JSON values."""
    reasons = [f"unknown field {name!r} (fields are {', '.join(FIELDS)})" for name in given if name not in FIELDS]
    values: dict[str, Any] = {name: getattr(defaults, name) for name in FIELDS if name != "prompt"}
    for name, value in given.items():
        if name in FIELDS and value is not None:
            try:
                values[name] = parse_field(name, csv_value(name, value) if from_csv else value)
            except InputError as exc:
                reasons.append(str(exc))
    if given.get("prompt") is None or values.get("prompt") == "":
        reasons.insert(0, "empty prompt" if "prompt" in given else "no prompt (every row needs one)")
    reasons += number_reasons(values["width"], values["height"], values["steps"], values["guidance"])
    if reasons:
        raise InputError("; ".join(reasons))
    return PromptRow(row=number, source=source, **values)


@dataclass
class _Reader:
    defaults: PromptDefaults
    rows: list[PromptRow] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    count: int = 0  # rows numbered so far, bad ones included

    def problem(self, source: str, reason: str) -> None:
        self.problems.append(RowProblem(source, f"{source}: {reason}"))

    def bad_row(self, source: str, reason: str) -> None:
        self.count += 1
        self.problem(source, reason)

    def row(self, source: str, given: dict[str, Any], from_csv: bool = False) -> None:
        self.count += 1
        try:
            self.rows.append(_build_row(self.count, source, given, self.defaults, from_csv))
        except InputError as exc:
            self.problem(source, str(exc))

    def add(self, source: str, position: int) -> None:
        kind = _source_kind(source)
        if kind == "inline":
            self.row(f"inline {position}", {"prompt": source})
            return
        try:
            text = _read_text(source, kind)
        except InputError as exc:
            self.problem(source, str(exc))
            return
        count, problems = self.count, len(self.problems)
        {".txt": self.add_txt, ".jsonl": self.add_jsonl, ".csv": self.add_csv}[kind](source, text)
        if self.count == count and len(self.problems) == problems:
            self.problem(source, "no prompts in this file")

    def add_txt(self, name: str, text: str) -> None:
        for number, line in enumerate(text.splitlines(), 1):
            prompt = line.strip()
            if prompt and not prompt.startswith("#"):
                self.row(f"{name}:{number}", {"prompt": prompt})

    def add_jsonl(self, name: str, text: str) -> None:
        if text.lstrip().startswith("["):
            self.problem(name, 'a JSON array, not JSON Lines: write one {"prompt": ...} object per line')
            return
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                self.jsonl_line(f"{name}:{number}", line)

    def jsonl_line(self, source: str, line: str) -> None:
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as exc:
            self.bad_row(source, f"not valid JSON ({exc.msg} at column {exc.colno})")
            return
        if not isinstance(doc, dict):
            self.bad_row(source, f'each line must be an object like {{"prompt": "a red fox"}}, got {json_type(doc)}')
            return
        self.row(source, doc)

    def add_csv(self, name: str, text: str) -> None:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            header = [cell.strip().lower() for cell in next(reader, [])]
            reason = _header_problem(header)
            if reason:
                self.problem(f"{name}:1", reason)
                return
            start = reader.line_num + 1
            for cells in reader:
                self.csv_row(f"{name}:{start}", header, cells)
                start = reader.line_num + 1
        except csv.Error as exc:
            self.problem(f"{name}:{reader.line_num}", f"not valid CSV ({exc}); the rows before it are read")

    def csv_row(self, source: str, header: list[str], cells: list[str]) -> None:
        if not any(cell.strip() for cell in cells):
            return
        if len(cells) > len(header):
            self.bad_row(source, f"{len(cells)} cells, but the header names {len(header)} columns (quote commas)")
            return
        given = {name: cell if cell.strip() else None for name, cell in zip(header, cells, strict=False)}
        self.row(source, given, from_csv=True)


def _header_problem(header: list[str]) -> str | None:
    columns = f"columns are {', '.join(FIELDS)}"
    unknown = [column for column in header if column not in FIELDS]
    twice = sorted({column for column in header if header.count(column) > 1})
    if not header:
        return "empty: the first line must name the columns, e.g. prompt,seeds,steps"
    if "prompt" not in header:
        return f"the header {','.join(header)!r} has no prompt column (the first line names the {columns})"
    if unknown:
        return f"unknown column {', '.join(map(repr, unknown))} ({columns})"
    if twice:
        return f"column {', '.join(twice)} is named twice"
    return None


def _source_kind(source: str) -> str:
    """``inline``, a prompt file's suffix (``.txt``, ``.jsonl``, ``.csv``), or ``?``: another file."""
    if "\n" in source:
        return "inline"
    path = Path(source).expanduser()
    one_word = not any(char.isspace() for char in source)
    suffix = path.suffix.lower()
    if suffix in FILE_SUFFIXES and (one_word or path.is_file()):
        return suffix
    return "?" if one_word and path.is_file() else "inline"


def _read_text(source: str, kind: str) -> str:
    if kind == "?":
        raise InputError(f"a file, but not a prompt file ({', '.join(FILE_SUFFIXES)})")
    try:
        text = Path(source).expanduser().read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError("no such file (one word ending in .txt, .jsonl or .csv is read as a file name)") from None
    except IsADirectoryError:
        raise InputError(f"a folder, not a prompt file ({', '.join(FILE_SUFFIXES)})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read it: {exc.strerror or exc}") from None
    if "\x00" in text:
        raise InputError("holds NUL bytes: not a text file")
    return text
