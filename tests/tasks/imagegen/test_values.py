"""Row settings from CLI text, CSV cells and JSON values: seeds, LoRAs, schedulers, numbers, JSON types."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ovbatch.errors import InputError
from ovbatch.tasks.imagegen.values import (
    MAX_SEED,
    MAX_SEEDS_PER_ROW,
    LoraUse,
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


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("0-3,7", (0, 1, 2, 3, 7)),
        (" 5 ", (5,)),
        ("9, 2 - 4", (9, 2, 3, 4)),
        ("3-3", (3,)),
        (str(MAX_SEED), (MAX_SEED,)),
        (f"{MAX_SEED - 1}-{MAX_SEED}", (MAX_SEED - 1, MAX_SEED)),
    ],
)
def test_parse_seeds(text: str, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds, f"parse_seeds({text!r})"


def test_parse_seeds_allows_the_most_per_row() -> None:
    assert len(parse_seeds(f"0-{MAX_SEEDS_PER_ROW - 1}")) == MAX_SEEDS_PER_ROW


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no seeds given: write seeds like 0-3,7"),
        (" , ", "no seeds given"),
        ("3-1", "seed range 3-1 runs backwards (write 1-3)"),
        ("1,1", "seed 1 is listed twice"),
        ("0-3,2", "seed 2 is listed twice"),
        ("-1", "'-1' is not a seed or a range a-b"),
        ("1,,2", "'' in '1,,2' is not a seed"),
        ("four", "'four' is not a seed"),
        ("1.5", "'1.5' is not a seed"),
        (f"0-{MAX_SEEDS_PER_ROW}", f"make {MAX_SEEDS_PER_ROW + 1} images; at most {MAX_SEEDS_PER_ROW} per prompt"),
        (f"0-{MAX_SEED}", "at most 10000 per prompt"),  # refused before the range is made
        (str(MAX_SEED + 1), f"seed {MAX_SEED + 1} is out of range: seeds are 0 to {MAX_SEED}"),
        ("9" * 5000, "is out of range"),
    ],
)
def test_parse_seeds_refuses(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_seeds(text)
    assert message in str(caught.value), f"parse_seeds({text[:30]!r}): {caught.value}"


def test_cli_seeds() -> None:
    assert cli_seeds(None, None) == (0,), "neither option: seed 0"
    assert cli_seeds("5,6", None) == (5, 6)
    assert cli_seeds(None, 4) == (0, 1, 2, 3), "--images-per-prompt 4 is seeds 0-3"
    with pytest.raises(InputError, match="use --seeds or --images-per-prompt, not both"):
        cli_seeds("0-3", 4)
    for count in (0, -1, MAX_SEEDS_PER_ROW + 1):
        with pytest.raises(InputError, match=f"--images-per-prompt {count}: use 1 to {MAX_SEEDS_PER_ROW}"):
            cli_seeds(None, count)


@pytest.mark.parametrize(
    ("text", "use"),
    [
        ("style@2:0.8", LoraUse("style@2", 0.8)),
        ("style", LoraUse("style", 1.0)),
        (" style@02:-1.5 ", LoraUse("style@2", -1.5)),
        ("my.lora_v1-x:10", LoraUse("my.lora_v1-x", 10.0)),
    ],
)
def test_parse_lora(text: str, use: LoraUse) -> None:
    assert parse_lora(text) == use, f"parse_lora({text!r})"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("style:abc", "alpha 'abc' is not a number (write name[@version][:alpha])"),
        ("style:", "alpha '' is not a number"),
        ("style:nan", "alpha nan is out of range: use -10 to 10"),
        ("style:11", "alpha 11.0 is out of range"),
        ("style:-inf", "alpha -inf is out of range"),
        ("bad name:1", "LoRA 'bad name': model name 'bad name'"),
        (":0.5", "model name ''"),
        ("style@x:1", "model version 'x'"),
    ],
)
def test_parse_lora_refuses(text: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_lora(text)
    assert message in str(caught.value), f"parse_lora({text!r}): {caught.value}"


def test_parse_scheduler() -> None:
    assert parse_scheduler("lcm") == "LCM"
    assert parse_scheduler(" euler-ancestral discrete ") == "EULER_ANCESTRAL_DISCRETE"
    assert parse_scheduler("auto") is None, "auto is the model's own scheduler"
    assert parse_scheduler("") is None
    with pytest.raises(InputError, match="unknown scheduler 'karras': choose from LCM, DDIM, .* or AUTO"):
        parse_scheduler("karras")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ((500, 512, 4, 1.0), "width 500 is not a multiple of 8 (use 496 or 504)"),
        ((512, 60, 4, 1.0), "height 60 is out of range (use 64 to 4096, a multiple of 8)"),
        ((4104, 512, 4, 1.0), "width 4104 is out of range"),
        ((512, 512, 0, 1.0), "steps 0 is too few (use 1 to 200)"),
        ((512, 512, 201, 1.0), "steps 201 is absurd (use 1 to 200"),
        ((512, 512, 4, math.nan), "guidance nan is out of range (use 0 to 50)"),
        ((512, 512, 4, math.inf), "guidance inf is out of range"),
        ((512, 512, 4, -0.5), "guidance -0.5 is out of range"),
        ((512, 512, 4, 50.5), "guidance 50.5 is out of range"),
    ],
)
def test_number_reasons(args: tuple[int, int, int, float], reason: str) -> None:
    reasons = number_reasons(*args)
    assert len(reasons) == 1 and reason in reasons[0], f"number_reasons{args}: {reasons}"


def test_number_reasons_all_at_once_and_as_options() -> None:
    assert number_reasons(64, 4096, 1, 0.0) == [] and number_reasons(512, 512, 200, 50.0) == [], "limits are allowed"
    reasons = number_reasons(500, 510, 0, 99.0, prefix="--")
    assert [r.split(" ")[0] for r in reasons] == ["--width", "--height", "--steps", "--guidance"], reasons


def test_nearest() -> None:
    assert (nearest(500, 8), nearest(512, 8), nearest(4, 8), nearest(520, 64)) == (
        "496 or 504",
        "512",
        "8",
        "512 or 576",
    )


def test_parse_field_values() -> None:
    assert parse_field("prompt", "  a red fox  ") == "a red fox", "prompts are stripped"
    assert parse_field("steps", 4) == 4 and parse_field("guidance", 7) == 7.0
    assert (
        parse_field("seeds", [3, 1]) == (3, 1)
        and parse_field("seeds", "0-1") == (0, 1)
        and parse_field("seeds", 9) == (9,)
    )
    loras = [{"name": "style@2", "alpha": 0.5}, {"name": "grain"}, "other:-1"]
    assert parse_field("loras", loras) == (LoraUse("style@2", 0.5), LoraUse("grain", 1.0), LoraUse("other", -1.0))
    assert parse_field("loras", "a:0.5; b") == (LoraUse("a", 0.5), LoraUse("b", 1.0)), "CSV syntax"
    assert parse_field("loras", []) == (), "an empty list is no LoRAs"
    assert parse_field("scheduler", "ddim") == "DDIM"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("steps", "four", 'steps must be a whole number, got string "four"'),
        ("steps", "4", 'steps must be a whole number, got string "4"'),
        ("steps", 4.0, "steps must be a whole number, got number 4.0"),
        ("width", True, "width must be a whole number, got boolean true"),
        ("guidance", "7.5", 'guidance must be a number, got string "7.5"'),
        ("guidance", [7], "guidance must be a number, got array"),
        ("prompt", 5, "prompt must be a string, got number 5"),
        ("prompt", {"text": "x"}, "prompt must be a string, got object"),
        ("prompt", "a\x00b", "prompt holds a NUL character"),
        ("prompt", "x" * 10_001, "prompt is 10001 characters long; at most 10000"),
        ("negative_prompt", 1, "negative_prompt must be a string"),
        ("seeds", [1, "2"], 'seeds[1] must be a whole number, got string "2"'),
        ("seeds", 3.5, "seeds must be a list of whole numbers, one, or a string"),
        ("seeds", [], "no seeds given"),
        ("seeds", [-1], "seed -1 is out of range"),
        ("seeds", [MAX_SEED + 1], "is out of range"),
        ("seeds", [2, 2], "seed 2 is listed twice"),
        ("loras", {"name": "a"}, "loras must be a list"),
        ("loras", [5], "loras[0] must be a string or an object {name, alpha}, got number 5"),
        ("loras", [{"name": "a", "weight": 1}], "loras[0]: unknown field weight (a LoRA has name and alpha)"),
        ("loras", [{"alpha": 1}], "loras[0] has no name"),
        ("loras", [{"name": "a", "alpha": "high"}], 'loras[0].alpha must be a number, got string "high"'),
        ("loras", [{"name": "a", "alpha": 20}], "LoRA a alpha 20.0 is out of range"),
        ("loras", ["a@1", "a@2:0.5"], "LoRA a is listed twice"),
        ("scheduler", 3, "scheduler must be a string, got number 3"),
        ("scheduler", "fast", "unknown scheduler 'fast'"),
    ],
)
def test_parse_field_refuses(name: str, value: Any, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_field(name, value)
    assert message in str(caught.value), f"{name}={value!r:.40}: {caught.value}"


def test_csv_value() -> None:
    assert csv_value("steps", " 4 ") == 4 and csv_value("guidance", "7.5") == 7.5
    assert csv_value("seeds", "0-3") == "0-3" and csv_value("prompt", "a, b") == "a, b", "text fields stay text"
    with pytest.raises(InputError, match="steps 'four' is not a whole number"):
        csv_value("steps", "four")
    with pytest.raises(InputError, match="width '512.5' is not a whole number"):
        csv_value("width", "512.5")
    with pytest.raises(InputError, match="guidance 'high' is not a number"):
        csv_value("guidance", "high")


def test_json_type() -> None:
    values: list[object] = [None, True, "é", 1.5, [], {}]
    assert [json_type(v) for v in values] == [
        "null",
        "boolean true",
        'string "é"',
        "number 1.5",
        "array",
        "object",
    ]
    assert json_type("x" * 100) == f'string "{"x" * 36}...', "long strings are cut"
