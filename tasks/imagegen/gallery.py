"""A batch's pictures at a glance: a contact sheet per prompt row, and a static ``index.html``.

* ``contact_sheet``: one PNG, the row's label on top, then its images side by side (at most 8 to a
  line), each at most 256 px a side with ``seed N`` under it, in Pillow's own font.
* ``index_html``: one self-contained page (inline CSS, no script, nothing fetched): a section per
  prompt row with its prompt, negative prompt, settings and thumbnails that link to the full PNGs by
  relative path; rows that failed as a whole are listed first with their errors, an image that failed
  shows its error in its place. Every text is HTML-escaped and every path URL-quoted and kept relative.
"""

from __future__ import annotations

import html
import io
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np
from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    from ovbatch.tasks.imagegen.spec import ImageJob

TILE_MAX_PX = 256
MAX_COLUMNS = 8
GAP_PX = 8
FONT_PX = 14
LINE_PX = 20
BACKGROUND = (250, 250, 250)
INK = (40, 40, 40)
MUTED = (110, 110, 110)
_PUNCTUATION = str.maketrans({"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})


@dataclass(frozen=True)
class GalleryImage:
    seed: int
    path: str  # the full PNG, relative to index.html
    thumb: str | None = None  # a smaller picture to show, if one was written; else the PNG itself
    error: str | None = None  # this seed failed: no picture


@dataclass(frozen=True)
class GalleryEntry:
    row: int
    source: str  # "prompts.csv:3"
    prompt: str
    negative_prompt: str = ""
    settings: tuple[tuple[str, str], ...] = ()  # ("Steps", "4"), ("Size", "512x512"), ...
    images: tuple[GalleryImage, ...] = ()
    error: str | None = None  # the whole row failed
    sheet: str | None = None  # its contact sheet, relative to index.html


def contact_sheet(images: Sequence[tuple[int, np.ndarray]], label: str) -> bytes:
    """A PNG of ``(seed, pixels)`` tiles in a grid under ``label``; pixels are uint8 height x width x 3."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    tiles = [(seed, _tile(pixels)) for seed, pixels in images]
    rows = -(-len(tiles) // MAX_COLUMNS)
    columns = -(-len(tiles) // rows)  # 9 images: 5 and 4, not 8 and 1
    cell_w = max(tile.width for _, tile in tiles)
    cell_h = max(tile.height for _, tile in tiles) + LINE_PX
    width = columns * cell_w + (columns + 1) * GAP_PX
    sheet = Image.new("RGB", (width, LINE_PX + GAP_PX + rows * (cell_h + GAP_PX) + GAP_PX), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_PX)
    draw.text((GAP_PX, GAP_PX), _fit(label, font, width - 2 * GAP_PX), fill=INK, font=font)
    for index, (seed, tile) in enumerate(tiles):
        x = GAP_PX + (index % columns) * (cell_w + GAP_PX)
        y = LINE_PX + 2 * GAP_PX + (index // columns) * (cell_h + GAP_PX)
        sheet.paste(tile, (x + (cell_w - tile.width) // 2, y))
        caption = _fit(f"seed {seed}", font, cell_w)
        draw.text((x + cell_w / 2, y + cell_h - LINE_PX / 2), caption, fill=MUTED, font=font, anchor="mm")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def settings_of(job: ImageJob) -> tuple[tuple[str, str], ...]:
    """A row's settings as the gallery shows them, from any one of its jobs."""
    pairs = [
        ("Model", job.model),
        ("Size", f"{job.width}x{job.height}"),
        ("Steps", str(job.steps)),
        ("Guidance", f"{job.guidance:g}"),
        ("Scheduler", job.scheduler or "model default"),
    ]
    if job.loras:
        pairs.append(("LoRAs", ", ".join(f"{lora.model} ({lora.alpha:g})" for lora in job.loras)))
    return tuple(pairs)


def index_html(batch_id: str, entries: Sequence[GalleryEntry]) -> str:
    """The batch's gallery page; see the module docstring."""
    failed = [entry for entry in entries if entry.error is not None]
    shown = [entry for entry in entries if entry.error is None]
    images = [image for entry in shown for image in entry.images]
    broken = sum(image.error is not None for image in images)
    counts = [(len(entries), "prompt"), (len(images) - broken, "image"), (broken, "failed image")]
    counts.append((len(failed), "failed prompt"))
    summary = ", ".join(_count(n, noun) for n, noun in counts if n or "failed" not in noun)
    body = [
        f"<header><h1>Batch <code>{_e(batch_id)}</code></h1><p>{_e(summary)}</p></header>",
        _failed_rows(failed),
        *[_section(entry) for entry in sorted(shown, key=lambda entry: entry.row)],
    ]
    return _PAGE.format(title=_e(f"ovbatch {batch_id}"), style=_STYLE, body="\n".join(part for part in body if part))


def _tile(pixels: np.ndarray) -> Image.Image:
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"pixels must be uint8 height x width x 3 (RGB), got {pixels.dtype} {pixels.shape}")
    tile = Image.fromarray(np.ascontiguousarray(pixels))
    tile.thumbnail((TILE_MAX_PX, TILE_MAX_PX), Image.Resampling.LANCZOS)  # only ever shrinks
    return tile


def _fit(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width_px: float) -> str:
    """``text`` on one line in ascii, cut with ``...`` to fit ``width_px``."""
    text = " ".join(_ascii(text).split())
    if font.getlength(text) <= width_px:
        return text
    low, high = 0, len(text)  # the longest cut that fits, found in log(n) measurements
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if font.getlength(text[:middle] + "...") <= width_px else (low, middle - 1)
    return text[:low].rstrip() + "..."


def _ascii(text: str) -> str:
    """Accents dropped (``ü`` -> ``u``), anything else beyond ascii ``?``: Pillow's own font has
    ascii only, and draws a box for the rest."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_PUNCTUATION))
    kept = "".join(char for char in decomposed if not unicodedata.combining(char))
    return kept.encode("ascii", "replace").decode()


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _href(path: str) -> str:
    """A relative URL for ``path``: quoted, so ``:``, ``#`` or ``?`` cannot make it a scheme or a
    fragment, and never starting with ``/`` (``//host`` would leave the folder)."""
    return _e(quote(path.lstrip("/"), safe="/"))


def _failed_rows(entries: Sequence[GalleryEntry]) -> str:
    if not entries:
        return ""
    items = "".join(
        f'<li><span class="src">{_e(e.source)}</span> {_e(e.prompt)}<div class="err">{_e(_unsourced(e))}</div></li>'
        for e in sorted(entries, key=lambda entry: entry.row)
    )
    return f'<section class="failed"><h2>Failed prompts</h2><ul>{items}</ul></section>'


def _unsourced(entry: GalleryEntry) -> str:
    """The error without the source in front: the list shows it already."""
    error = entry.error or ""
    return error.removeprefix(f"{entry.source}: ")


def _section(entry: GalleryEntry) -> str:
    parts = [f'<h2><span class="num">{entry.row:04d}</span> {_e(entry.prompt)}</h2>']
    if entry.negative_prompt:
        parts.append(f'<p class="neg"><span>Negative</span> {_e(entry.negative_prompt)}</p>')
    settings = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in entry.settings)
    source = f"<div><dt>Source</dt><dd>{_e(entry.source)}</dd></div>"
    sheet = f'<div><dt>Sheet</dt><dd><a href="{_href(entry.sheet)}">contact sheet</a></dd></div>' if entry.sheet else ""
    parts.append(f"<dl>{settings}{source}{sheet}</dl>")
    parts.append(f'<div class="grid">{"".join(_figure(image) for image in entry.images)}</div>')
    return f'<section id="row-{entry.row}">{"".join(parts)}</section>'


def _figure(image: GalleryImage) -> str:
    caption = f"<figcaption>seed {image.seed}</figcaption>"
    if image.error is not None:
        return f'<figure class="bad"><div class="err">{_e(image.error)}</div>{caption}</figure>'
    picture = f'<img src="{_href(image.thumb or image.path)}" alt="seed {image.seed}" loading="lazy">'
    return f'<figure><a href="{_href(image.path)}">{picture}</a>{caption}</figure>'


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
</head>
<body>
{body}
</body>
</html>
"""

_STYLE = """
:root { color-scheme: light dark; --bg: #f6f6f4; --card: #fff; --ink: #222; --muted: #666; --line: #ddd;
  --bad: #b3261e; --badbg: #fdecea; }
@media (prefers-color-scheme: dark) { :root { --bg: #16171a; --card: #202226; --ink: #e8e8e8; --muted: #9a9a9a;
  --line: #33363b; --bad: #ff8a80; --badbg: #3a1f1f; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 24px; background: var(--bg); color: var(--ink);
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header h1 { margin: 0; font-size: 22px; } header p { margin: 4px 0 20px; color: var(--muted); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 16px 18px;
  margin-bottom: 18px; }
h2 { margin: 0 0 6px; font-size: 17px; font-weight: 600; overflow-wrap: anywhere; }
.num { color: var(--muted); font: 13px ui-monospace, monospace; margin-right: 6px; }
.neg { margin: 0 0 8px; color: var(--muted); overflow-wrap: anywhere; }
.neg span { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; margin-right: 6px; }
dl { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 0 0 12px; font-size: 13px; }
dl div { display: flex; gap: 6px; } dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
figure { margin: 0; } figure img { display: block; width: 100%; height: auto; border-radius: 6px;
  background: var(--line); }
figcaption { text-align: center; font-size: 12px; color: var(--muted); margin-top: 4px; }
.err { color: var(--bad); background: var(--badbg); border-radius: 6px; padding: 6px 8px; font-size: 13px;
  overflow-wrap: anywhere; }
figure.bad .err { aspect-ratio: 1; display: flex; align-items: center; justify-content: center; text-align: center; }
.failed { border-color: var(--bad); } .failed ul { margin: 0; padding-left: 18px; } .failed li { margin: 6px 0; }
.src { font: 13px ui-monospace, monospace; color: var(--muted); margin-right: 6px; }
a:focus-visible img { outline: 3px solid #4a90d9; outline-offset: 2px; }
"""
