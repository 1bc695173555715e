"""Reading txt2img prompts: inline, .txt, .jsonl, .csv; numbering, defaults, per-row problems, slugs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ovbatch.errors import InputError
from ovbatch.tasks.imagegen.prompts import (
    LoraUse,
    PromptDefaults,
    PromptRow,
    Prompts,
    check_defaults,
    check_for_model,
    image_stem,
    read_prompts,
    slug,
)

DEFAULTS = PromptDefaults(negative_prompt="blurry", seeds=(0, 1), steps=4, guidance=1.0, width=512, height=512)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # prompt files are named relative to here, as a user types them


def read(*sources: str, defaults: PromptDefaults = DEFAULTS) -> Prompts:
    return read_prompts(list(sources), defaults)


def reasons(prompts: Prompts) -> list[str]:
    return [problem.reason for problem in prompts.problems]


def only_reason(prompts: Prompts) -> str:
    assert len(prompts.problems) == 1, f"expected one problem, got {reasons(prompts)}"
    return prompts.problems[0].reason


def write(name: str, text: str) -> str:
    Path(name).write_text(text, encoding="utf-8")
    return name


def jsonl(name: str, *docs: object) -> str:
    return write(name, "".join(json.dumps(doc) + "\n" for doc in docs))


# --- inline and .txt ---------------------------------------------------------------------------


def test_inline_prompts_take_the_defaults() -> None:
    rows, problems = read("  a red fox  ", "a blue whale")
    assert problems == []
    assert rows[0] == PromptRow(1, "inline 1", "a red fox", "blurry", (0, 1), 4, 1.0, 512, 512, (), None)
    assert (rows[1].row, rows[1].source, rows[1].prompt) == (2, "inline 2", "a blue whale")


def test_txt_skips_blank_lines_and_comments_and_numbers_across_sources() -> None:
    write("prompts.txt", "# my prompts\n\na cat\n   \n  # indented comment\na dog  \n")
    rows, problems = read("first", "prompts.txt", "last")
    assert problems == []
    assert [(r.row, r.source, r.prompt) for r in rows] == [
        (1, "inline 1", "first"),
        (2, "prompts.txt:3", "a cat"),
        (3, "prompts.txt:6", "a dog"),
        (4, "inline 3", "last"),
    ]


def test_utf8_bom_and_crlf_are_read() -> None:
    Path("win.txt").write_bytes("\ufeffcafé au lait\r\nthé\r\n".encode())
    assert [r.prompt for r in read("win.txt").rows] == ["café au lait", "thé"]


def test_empty_prompt_inline() -> None:
    assert only_reason(read("   ")) == "inline 1: empty prompt"


# --- .jsonl -------------------------------------------------------------------------------------


def test_jsonl_fields_override_the_defaults() -> None:
    doc = {
        "prompt": "a red fox",
        "negative_prompt": "",
        "seeds": [7, 3],
        "steps": 8,
        "guidance": 2,
        "width": 768,
        "height": 640,
        "loras": ["style@2:0.8", {"name": "grain", "alpha": -0.5}],
        "scheduler": "euler_discrete",
    }
    rows, problems = read(jsonl("p.jsonl", doc, {"prompt": "plain", "seeds": None, "scheduler": None}))
    assert problems == []
    loras = (LoraUse("style@2", 0.8), LoraUse("grain", -0.5))
    assert rows[0] == PromptRow(1, "p.jsonl:1", "a red fox", "", (7, 3), 8, 2.0, 768, 640, loras, "EULER_DISCRETE")
    assert rows[1] == PromptRow(2, "p.jsonl:2", "plain", "blurry", (0, 1), 4, 1.0, 512, 512, (), None), "null: default"


def test_jsonl_seeds_as_string_or_int() -> None:
    rows, _ = read(jsonl("p.jsonl", {"prompt": "a", "seeds": "0-2,9"}, {"prompt": "b", "seeds": 5}))
    assert [r.seeds for r in rows] == [(0, 1, 2, 9), (5,)]


def test_jsonl_bad_rows_are_reported_and_keep_their_numbers() -> None:
    write(
        "p.jsonl",
        "\n".join(
            [
                '{"prompt": "good one"}',
                '{"prompt": "bad", "steps": "four"}',
                "{not json",
                '"just a string"',
                "",
                '{"prompt": "x", "sampler": "Euler", "cfg": 7}',
                '{"negative_prompt": "x"}',
                '{"prompt": "good two"}',
            ]
        ),
    )
    rows, problems = read("p.jsonl")
    assert [(r.row, r.source) for r in rows] == [(1, "p.jsonl:1"), (7, "p.jsonl:8")], "bad rows keep their numbers"
    assert [p.source for p in problems] == ["p.jsonl:2", "p.jsonl:3", "p.jsonl:4", "p.jsonl:6", "p.jsonl:7"]
    got = reasons(Prompts(rows, problems))
    assert got[0] == 'p.jsonl:2: steps must be a whole number, got string "four"'
    assert got[1].startswith(
        "p.jsonl:3: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    )
    assert got[2] == 'p.jsonl:4: each line must be an object like {"prompt": "a red fox"}, got string "just a string"'
    assert "unknown field 'sampler'" in got[3] and "unknown field 'cfg'" in got[3], got[3]
    assert got[4] == "p.jsonl:7: no prompt (every row needs one)"


def test_jsonl_array_is_one_problem() -> None:
    write("p.jsonl", '[\n  {"prompt": "a"},\n  {"prompt": "b"}\n]\n')
    assert (
        only_reason(read("p.jsonl"))
        == 'p.jsonl: a JSON array, not JSON Lines: write one {"prompt": ...} object per line'
    )


def test_every_problem_of_a_row_is_told_at_once() -> None:
    reason = only_reason(read(jsonl("p.jsonl", {"prompt": " ", "width": 500, "steps": 0, "seeds": [1, 1]})))
    assert reason.startswith("p.jsonl:1: empty prompt; "), reason
    for part in ("seed 1 is listed twice", "width 500 is not a multiple of 8 (use 496 or 504)", "steps 0 is too few"):
        assert part in reason, f"{part!r} missing from {reason!r}"


# --- .csv ---------------------------------------------------------------------------------------


def test_csv_rows() -> None:
    write(
        "prompts.csv",
        "Prompt, seeds ,loras,steps,guidance,width,height,negative_prompt,scheduler\n"
        '"a cat, sitting","0-3,7",style@2:0.8;other:0.5,8,7.5,768,512,"text, watermark",lcm\n'
        "a dog,,,,,,,,\n"
        "\n"
        ",,,,,,,,\n"
        "short row\n",
    )
    rows, problems = read("prompts.csv")
    assert problems == []
    loras = (LoraUse("style@2", 0.8), LoraUse("other", 0.5))
    seeds = (0, 1, 2, 3, 7)
    assert rows[0] == PromptRow(
        1, "prompts.csv:2", "a cat, sitting", "text, watermark", seeds, 8, 7.5, 768, 512, loras, "LCM"
    )
    assert rows[1] == PromptRow(2, "prompts.csv:3", "a dog", "blurry", (0, 1), 4, 1.0, 512, 512, (), None)
    assert (rows[2].row, rows[2].source, rows[2].prompt) == (3, "prompts.csv:6", "short row"), "blank rows skipped"


def test_csv_reports_the_row_and_what_would_be_right() -> None:
    write("prompts.csv", "prompt,width,steps\na,512,4\nb,512,4\nc,500,4\nd,abc,four\n")
    rows, problems = read("prompts.csv")
    assert [r.prompt for r in rows] == ["a", "b"]
    assert reasons(Prompts(rows, problems)) == [
        "prompts.csv:4: width 500 is not a multiple of 8 (use 496 or 504)",
        "prompts.csv:5: width 'abc' is not a whole number; steps 'four' is not a whole number",
    ]


def test_csv_source_is_the_line_a_row_starts_on() -> None:
    write("p.csv", 'prompt\n"two\nlines"\nnext\n')
    rows, _ = read("p.csv")
    assert [(r.source, r.prompt) for r in rows] == [("p.csv:2", "two\nlines"), ("p.csv:4", "next")]


def test_csv_too_many_cells() -> None:
    write("p.csv", "prompt,steps\na cat, sitting,4\nok,4\n")
    rows, problems = read("p.csv")
    assert [r.row for r in rows] == [2]
    assert reasons(Prompts(rows, problems)) == ["p.csv:2: 3 cells, but the header names 2 columns (quote commas)"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "p.csv:1: empty: the first line must name the columns, e.g. prompt,seeds,steps"),
        ("text,seeds\na,1\n", "p.csv:1: the header 'text,seeds' has no prompt column"),
        (
            "prompt,sampler,cfg\na,b,c\n",
            "p.csv:1: unknown column 'sampler', 'cfg' (columns are prompt, ",
        ),
        ("prompt,steps,Steps\na,1,2\n", "p.csv:1: column steps is named twice"),
    ],
)
def test_csv_header_problems(text: str, reason: str) -> None:
    write("p.csv", text)
    got = only_reason(read("p.csv"))
    assert got.startswith(reason), got


def test_csv_broken_quoting_keeps_the_rows_before() -> None:
    write("p.csv", 'prompt,steps\na,4\n"b"x,4\nc,4\n')
    rows, problems = read("p.csv")
    assert [r.prompt for r in rows] == ["a"]
    assert reasons(Prompts(rows, problems)) == [
        "p.csv:3: not valid CSV (',' expected after '\"'); the rows before it are read"
    ]


# --- files that are not prompt files ---------------------------------------------------------------


def test_unreadable_files_are_named() -> None:
    Path("latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    Path("image.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    Path("nul.jsonl").write_bytes(b'{"prompt": "a"}\x00\n')
    Path("folder.txt").mkdir()
    write("notes.json", '{"prompt": "a"}')
    write("empty.txt", "# nothing yet\n\n")
    _, problems = read("latin1.txt", "image.csv", "nul.jsonl", "missing.csv", "folder.txt", "notes.json", "empty.txt")
    assert reasons(Prompts([], problems)) == [
        "latin1.txt: not UTF-8 text (invalid continuation byte at byte 3); save it as UTF-8",
        "image.csv: not UTF-8 text (invalid start byte at byte 0); save it as UTF-8",
        "nul.jsonl: holds NUL bytes: not a text file",
        "missing.csv: no such file (one word ending in .txt, .jsonl or .csv is read as a file name)",
        "folder.txt: a folder, not a prompt file (.txt, .jsonl, .csv)",
        "notes.json: a file, but not a prompt file (.txt, .jsonl, .csv)",
        "empty.txt: no prompts in this file",
    ]


def test_a_prompt_that_mentions_a_file_stays_a_prompt() -> None:
    rows, problems = read("a photo of notes.txt", "a.b")
    assert problems == [] and [r.prompt for r in rows] == ["a photo of notes.txt", "a.b"]


def test_a_file_name_with_spaces_is_a_file_when_it_exists() -> None:
    write("my prompts.TXT", "a cat\n")
    assert [r.source for r in read("my prompts.TXT").rows] == ["my prompts.TXT:1"]


# --- defaults and the model's limits --------------------------------------------------------------


def test_bad_defaults_name_the_cli_options() -> None:
    with pytest.raises(InputError) as caught:
        check_defaults(PromptDefaults(width=500, steps=500, guidance=-1.0))
    message = str(caught.value)
    for part in ("--width 500 is not a multiple of 8 (use 496 or 504)", "--steps 500 is absurd", "--guidance -1.0"):
        assert part in message, f"{part!r} missing from {message!r}"
    with pytest.raises(InputError, match="seed 1 is listed twice"):
        read("a cat", defaults=PromptDefaults(seeds=(1, 1)))
    with pytest.raises(InputError, match="LoRA x alpha 11.0 is out of range"):
        check_defaults(PromptDefaults(loras=(LoraUse("x", 11.0),)))
    with pytest.raises(InputError, match="--scheduler 'lcm': spell it LCM"):
        check_defaults(PromptDefaults(scheduler="lcm"))
    check_defaults(PromptDefaults())  # the defaults' defaults are usable


def test_check_for_model() -> None:
    row = PromptRow(3, "p.csv:4", "a", "", (0,), 4, 1.0, 1024, 768, (), None)
    assert check_for_model(row, 1024) is None
    assert check_for_model(row, 768) == "p.csv:4: 1024x768 is over the limit of 768 px a side (OVBATCH_MAX_IMAGE_SIDE)"
    odd = dataclasses.replace(row, width=520)
    assert check_for_model(odd, 1024, multiple_of=64) == (
        "p.csv:4: 520x768 is not a size this model makes: it needs multiples of 64 (width 512 or 576, height 768)"
    )


def test_rows_are_frozen() -> None:
    row = read("a cat").rows[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(row, "prompt", "a dog")  # noqa: B010 (a plain assignment is what mypy refuses too)


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("A Red Fox, in the Snow!", "a-red-fox-in-the-snow"),
        ("Café crème brûlée", "cafe-creme-brulee"),
        ("東京の夜", "image"),
        ("", "image"),
        ("  --- !!! ", "image"),
        ("<lora:style:0.8> portrait", "lora-style-0-8-portrait"),
        ("one two three four five six seven eight nine ten", "one-two-three-four-five-six-seven-eight"),
        ("x" * 60, "x" * 40),
        ("a" * 40 + " b", "a" * 40),
        ("word " * 8, "word-word-word-word-word-word-word-word"),  # exactly 39: kept whole
    ],
)
def test_slug(prompt: str, expected: str) -> None:
    got = slug(prompt)
    assert got == expected, f"slug({prompt!r})"
    assert len(got) <= 40 and got.isascii() and not got.startswith("-") and not got.endswith("-")


def test_image_stem() -> None:
    assert image_stem(3, 42, "A red fox") == "0003-42-a-red-fox"
    assert image_stem(12345, 2**64 - 1, "東京") == "12345-18446744073709551615-image"
