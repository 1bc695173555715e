"""Contact sheets (grid, captions, downscaling) and the static gallery page (escaping, relative links)."""

from __future__ import annotations

import io
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from ovbatch.tasks.imagegen.gallery import (
    GAP_PX,
    LINE_PX,
    TILE_MAX_PX,
    GalleryEntry,
    GalleryImage,
    contact_sheet,
    index_html,
    settings_of,
)
from ovbatch.tasks.imagegen.spec import ImageJob, LoraSpec


def solid(color: tuple[int, int, int], height: int = 64, width: int = 64) -> np.ndarray:
    return np.full((height, width, 3), color, dtype=np.uint8)


def open_png(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG", image.format
    return image.convert("RGB")


def sheet_size(columns: int, rows: int, tile_w: int, tile_h: int) -> tuple[int, int]:
    width = columns * tile_w + (columns + 1) * GAP_PX
    return width, LINE_PX + GAP_PX + rows * (tile_h + LINE_PX + GAP_PX) + GAP_PX


def test_sheet_places_tiles_side_by_side() -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    sheet = open_png(contact_sheet([(seed, solid(c)) for seed, c in enumerate(colors)], "0001 a red fox"))
    assert sheet.size == sheet_size(3, 1, 64, 64)
    top = LINE_PX + 2 * GAP_PX
    for index, color in enumerate(colors):
        center = (GAP_PX + index * (64 + GAP_PX) + 32, top + 32)
        assert sheet.getpixel(center) == color, f"tile {index} is not at {center}"


@pytest.mark.parametrize(("count", "columns", "rows"), [(1, 1, 1), (8, 8, 1), (9, 5, 2), (20, 7, 3), (64, 8, 8)])
def test_sheet_grid_is_at_most_eight_wide_and_balanced(count: int, columns: int, rows: int) -> None:
    images = [(seed, solid((seed * 3 % 256, 0, 0), 16, 16)) for seed in range(count)]
    assert open_png(contact_sheet(images, "x")).size == sheet_size(columns, rows, 16, 16), f"{count} images"


def test_sheet_downscales_big_tiles_keeping_their_shape() -> None:
    sheet = open_png(contact_sheet([(0, solid((9, 9, 9), 512, 1024)), (1, solid((9, 9, 9), 512, 1024))], "big"))
    assert sheet.size == sheet_size(2, 1, TILE_MAX_PX, TILE_MAX_PX // 2)


def test_sheet_has_captions_and_label() -> None:
    blank = open_png(contact_sheet([(0, solid((0, 0, 0)))], ""))
    captioned = np.asarray(blank)
    caption_band = captioned[LINE_PX + 2 * GAP_PX + 64 :, :]
    assert (caption_band < 200).any(), "no caption drawn under the tile"
    label_band = np.asarray(open_png(contact_sheet([(0, solid((0, 0, 0)))], "a label")))[: LINE_PX + GAP_PX]
    assert (label_band < 200).any() and not (np.asarray(blank)[: LINE_PX + GAP_PX] < 200).any(), "no label drawn"


def test_sheet_label_of_any_length_and_script() -> None:
    label = "0007 " + "東京の夜 — café “quoted” " * 40
    sheet = open_png(contact_sheet([(2**64 - 1, solid((1, 2, 3), 8, 8))], label))
    assert sheet.size == sheet_size(1, 1, 8, 8), "a long label is cut, it does not widen the sheet"


def test_sheet_refuses_nothing_and_bad_pixels() -> None:
    with pytest.raises(ValueError, match="at least one image"):
        contact_sheet([], "x")
    with pytest.raises(ValueError, match="pixels must be uint8 height x width x 3"):
        contact_sheet([(0, np.zeros((4, 4, 4), np.uint8))], "x")


# --- the page -------------------------------------------------------------------------------------


class Page(HTMLParser):
    """The tags, links and text of a page; fails on a closing tag that does not match."""

    VOID = {"meta", "img", "br", "link", "input"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.urls: list[str] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()
        assert self.stack == [], f"unclosed tags {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value or "" for name, value in attrs if name in ("href", "src")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack.pop() == tag, f"</{tag}> closes nothing open"

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def entries() -> list[GalleryEntry]:
    images = (
        GalleryImage(0, "0002-0-a-fox.png"),
        GalleryImage(1, "out dir/0002-1 #x?.png", thumb="thumbs/0002-1.png"),
        GalleryImage(2, "0002-2.png", error="worker ran out of memory <oom>"),
    )
    return [
        GalleryEntry(5, "p.csv:6", "a later row", images=(GalleryImage(7, "0005-7.png"),)),
        GalleryEntry(
            2,
            "p.csv:3",
            'a <script>alert("fox")</script> & friends',
            negative_prompt="blurry <b>",
            settings=(("Steps", "4"), ("Size", "512x512")),
            images=images,
            sheet="0002-sheet.png",
        ),
        GalleryEntry(3, "p.csv:4", "too big", error="p.csv:4: 2048x2048 is over the limit of 1024 px a side"),
        GalleryEntry(
            4,
            "p.csv:5",
            "evil paths",
            images=(GalleryImage(0, "javascript:alert(1)"), GalleryImage(1, "//evil.example/x.png")),
        ),
    ]


def test_page_escapes_every_text() -> None:
    text = index_html("batch <1>", entries())
    page = Page(text)
    assert "script" not in page.tags, "a prompt became markup"
    assert "<script>" not in text and "<b>" not in text and "<oom>" not in text
    shown = "".join(page.text)
    for plain in (
        'a <script>alert("fox")</script> & friends',
        "blurry <b>",
        "worker ran out of memory <oom>",
        "batch <1>",
    ):
        assert plain in shown, f"{plain!r} is not shown as text"


def test_page_links_are_relative_and_quoted() -> None:
    page = Page(index_html("b", entries()))
    assert "out%20dir/0002-1%20%23x%3F.png" in page.urls, page.urls
    assert "thumbs/0002-1.png" in page.urls and "0002-sheet.png" in page.urls
    assert "javascript%3Aalert%281%29" in page.urls and "evil.example/x.png" in page.urls, page.urls
    for url in page.urls:
        assert ":" not in url and not url.startswith("/"), f"{url!r} is not a relative path"


def test_page_is_self_contained() -> None:
    text = index_html("b", entries())
    page = Page(text)
    assert not {"script", "link", "iframe"} & set(page.tags), page.tags
    assert "http:" not in text and "https:" not in text and "url(" not in text and "@import" not in text


def test_page_sections_in_row_order_with_failures_listed_first() -> None:
    text = index_html("b", entries())
    failed = text.index("Failed prompts")
    assert failed < text.index('id="row-2"') < text.index('id="row-4"') < text.index('id="row-5"')
    assert 'id="row-3"' not in text, "a failed row is listed, not given a section"
    shown = "".join(Page(text).text)
    assert "p.csv:4" in shown and "2048x2048 is over the limit of 1024 px a side" in shown
    assert "p.csv:4: 2048x2048" not in shown, "the source is shown once, not again in front of the error"
    assert "4 prompts, 5 images, 1 failed image, 1 failed prompt" in shown
    assert "Steps" in shown and "512x512" in shown and "seed 2" in shown


def test_page_without_failures_says_so_briefly() -> None:
    text = index_html("b", [GalleryEntry(1, "inline 1", "a", images=(GalleryImage(0, "a.png"),))])
    assert "Failed" not in text and "1 prompt, 1 image<" in text


def test_settings_of_a_job() -> None:
    job = ImageJob(
        batch_id="b",
        job_id="j",
        display="d",
        relpath="0001-0-a.png",
        model="lcm@3",
        device="CPU",
        out_url="file:///o",
        row=1,
        source="inline 1",
        model_digest="a" * 64,
        prompt="a",
        seed=0,
        steps=4,
        guidance=1.0,
        width=512,
        height=768,
        loras=(LoraSpec(model="style@2", digest="b" * 64, alpha=0.8),),
    )
    assert settings_of(job) == (
        ("Model", "lcm@3"),
        ("Size", "512x768"),
        ("Steps", "4"),
        ("Guidance", "1"),
        ("Scheduler", "model default"),
        ("LoRAs", "style@2 (0.8)"),
    )
