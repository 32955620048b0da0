"""Synthetic training pairs: render clean text pages, corrupt them, and write both.

Real scans come without their clean originals, so training data is made the other way round: a page is
typeset from random pseudo-English (headings, paragraphs, lists, tables, one or two columns) and figures (grey
charts, photographs, hatched drawings, stamps: content that is not text and must survive cleaning) with the fonts
this machine has, at text sizes true to the dpi, and a corruption model turns it into its "scan". The clean
page is the exact training target, and every page is reproducible from (seed, page number) alone.

The rendered pixels depend on the font files installed, so the same seed gives the same layout but not
necessarily the same pixels on another machine.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from . import noise
from .imageio import to_uint8, write_page

# About 300 common English words, most frequent first; drawn with Zipf-like weights so text reads like text.
_WORDS = """
the of and to a in is that for it as was with be by on not he this are or his from at which but have an they you
were her she there one all we their been has would when if more will other no some into its can only these two
may first any time could most over my such our new also after very then what made where years way much before
many must through back should each those people well because same work how under last just still great state
system part used never between every both life being long world group might while year found here another given
number several high three right general case public place small order however against point water form without
within during large house area since early local fact upon light often less power around thing said second
development social country course process control change rather interest service problem report field market
level data result value method action table line study question information program section following present
further figure model test period record account government policy center total view evidence paper board example
support review material condition structure family income price office sample effect analysis basis cost design
effort final common direction product range growth quality position reason answer simple type note approach
energy across letter natural human history member stage standard difference series amount current possible
likely known clear nature scale surface central rate length average unit single particular similar major recent
specific various whole strong open full short free real true necessary certain able low late hard close ready
direct basic street city school money body music book season student learning reading science purpose decision
summary committee meeting budget client contract payment customer schedule request response balance council
""".split()
_WEIGHTS = 1 / (np.arange(len(_WORDS)) + 8.0)
_WEIGHTS /= _WEIGHTS.sum()

# Latin text typefaces common on Linux, named <Foundry><Kind>[-<Style>].ttf; symbol and script fonts are left out.
_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "~/.local/share/fonts", "~/.fonts")
_FONT_NAME = re.compile(r"(DejaVu|Liberation|Free|Noto)(Sans|Serif|Mono|SansMono)"
                        r"(?:-(Regular|Book|Roman|Medium|Bold|Italic|Oblique|BoldItalic|BoldOblique))?", re.IGNORECASE)
_DEFAULT_FONT = ""  # stands for Pillow's built-in scalable font when no font file is found

Typeface = tuple[str, dict[str, str]]  # (kind: serif, sans or mono; {style: font file})


@functools.cache
def typefaces() -> list[Typeface]:
    """The typefaces found on this machine, each with at least a regular style; Pillow's own font if none."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for folder in _FONT_DIRS:
        for path in sorted(Path(folder).expanduser().rglob("*.[ot]tf")):
            match = _FONT_NAME.fullmatch(path.stem)
            if not match:
                continue
            foundry, kind, style = match[1].lower(), match[2].lower(), (match[3] or "regular").lower()
            kind = "mono" if "mono" in kind else kind
            bold, italic = "bold" in style, "italic" in style or "oblique" in style
            style = "bolditalic" if bold and italic else "bold" if bold else "italic" if italic else "regular"
            found.setdefault((foundry, kind), {}).setdefault(style, str(path))
    faces = [(kind, styles) for (_, kind), styles in sorted(found.items()) if "regular" in styles]
    return faces or [("sans", {"regular": _DEFAULT_FONT})]


@functools.lru_cache(maxsize=256)
def _font(path: str, size: float) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size) if path == _DEFAULT_FONT else ImageFont.truetype(path, size)


def _face(typeface: Typeface, style: str, size: float) -> ImageFont.FreeTypeFont:
    """The font in that style, or the nearest one the typeface has (bold italic -> bold -> regular)."""
    styles = typeface[1]
    path = styles.get(style) or styles.get(style.replace("italic", "")) or styles["regular"]
    return _font(path, size)


def _has_glyph(font: ImageFont.FreeTypeFont, char: str) -> bool:
    return bytes(font.getmask(char)) != bytes(font.getmask("\uffff"))  # U+FFFF is never mapped: the .notdef box


# --- pseudo-English -------------------------------------------------------------------------------------------

def _words(rng: np.random.Generator, n: int) -> list[str]:
    return [_WORDS[i] for i in rng.choice(len(_WORDS), size=n, p=_WEIGHTS)]


def _sentence(rng: np.random.Generator) -> list[str]:
    words = _words(rng, int(rng.integers(5, 20, endpoint=True)))
    for i in range(len(words) - 1):
        roll = rng.random()
        if roll < 0.03:
            words[i] = str(rng.integers(2, 2000))
        elif roll < 0.06:
            words[i] = words[i].capitalize()
        elif roll < 0.14 and 0 < i < len(words) - 2:
            words[i] += ","
    words[0] = words[0].capitalize()
    words[-1] += "......?:;"[rng.integers(9)]
    return words


def _paragraph(rng: np.random.Generator, sentences: tuple[int, int] = (2, 7)) -> list[str]:
    return [w for _ in range(int(rng.integers(*sentences, endpoint=True))) for w in _sentence(rng)]


def _title(rng: np.random.Generator, lo: int, hi: int) -> str:
    words = _words(rng, int(rng.integers(lo, hi, endpoint=True)))
    return " ".join(w if w in ("of", "and", "the", "a", "in", "to", "for") and i else w.capitalize()
                    for i, w in enumerate(words))


def _cell(rng: np.random.Generator, kind: int) -> str:
    """A table cell; a column keeps one kind so it reads like data."""
    if kind == 0:
        return f"{rng.integers(0, 10000):,}"
    if kind == 1:
        return f"{rng.normal(50, 30):.{rng.integers(1, 3)}f}"
    if kind == 2:
        return f"{rng.uniform(0, 100):.1f}%"
    if kind == 3:
        return str(rng.integers(1950, 2025))
    return _words(rng, 1)[0]


# --- layout ---------------------------------------------------------------------------------------------------

class _Flow:
    """Hands out horizontal bands top to bottom, column after column, until the page is full."""

    def __init__(self, columns: list[tuple[float, float]], top: float, bottom: float):
        self.columns, self.top, self.bottom = columns, top, bottom
        self.column, self.y = 0, top

    def take(self, height: float, keep: float = 0.0) -> tuple[float, float, float] | None:
        """(x, y, width) of a band of this height, with `keep` more room free below it (so a heading is not
        left alone at the foot of a column); None once the page is full."""
        while self.y + height + keep > self.bottom:
            if self.column + 1 == len(self.columns) or self.y == self.top:
                return None
            self.column, self.y = self.column + 1, self.top
        x, width = self.columns[self.column]
        y, self.y = self.y, self.y + height
        return x, y, width

    def skip(self, gap: float) -> None:
        if self.y > self.top:  # no blank space at the head of a column
            self.y += gap


def _wrap(words: list[str], font: ImageFont.FreeTypeFont, width: float, indent: float = 0.0) -> list[list[str]]:
    space = font.getlength(" ")
    lines, line, used = [], [], indent
    for word in words:
        w = font.getlength(word)
        if line and used + space + w > width:
            lines.append(line)
            line, used = [], 0.0
        used += (space if line else 0) + w
        line.append(word)
    return lines + [line] if line else lines


def _baseline(font: ImageFont.FreeTypeFont, y: float, height: float) -> float:
    ascent, descent = font.getmetrics()
    return y + (height + ascent - descent) / 2


class _Page:
    """One page being typeset: a coverage canvas (255 = full ink), the page style, and the block types."""

    def __init__(self, rng: np.random.Generator, dpi: int, size_mm: tuple[float, float]):
        self.rng, self.mm, self.pt = rng, dpi / 25.4, dpi / 72
        self.width, self.height = (round(s * self.mm) for s in size_mm)
        self.canvas = Image.new("L", (self.width, self.height), 0)
        self.draw = ImageDraw.Draw(self.canvas)
        faces = typefaces()
        text_faces = [f for f in faces if f[0] != "mono"] or faces
        mono_faces = [f for f in faces if f[0] == "mono"] or faces
        body_faces = mono_faces if rng.random() < 0.05 else text_faces  # now and then a typewritten page
        self.body_face = body_faces[rng.integers(len(body_faces))]
        self.head_face = self.body_face if rng.random() < 0.6 else text_faces[rng.integers(len(text_faces))]
        self.size = rng.uniform(9, 12) * self.pt
        self.leading = self.size * rng.uniform(1.15, 1.3)
        self.body = _face(self.body_face, "regular", self.size)
        self.justify = rng.random() < 0.55
        self.indent_paragraphs = rng.random() < 0.5
        self.line_width = max(1, round(rng.uniform(0.4, 1.0) * self.pt))
        self.section = 0

    def text(self, x: float, y: float, height: float, words: list[str], font, width: float = 0.0,
             align: str = "left") -> None:
        """Set one line in a band: left, centred, right, or justified across `width`."""
        base = _baseline(font, y, height)
        if align == "justify" and len(words) > 1:
            widths = [font.getlength(w) for w in words]
            gap = (width - sum(widths)) / (len(words) - 1)
            for word, offset in zip(words, np.cumsum([0.0, *widths[:-1]]) + gap * np.arange(len(words))):
                self.draw.text((x + offset, base), word, font=font, fill=255, anchor="ls")
            return
        line = " ".join(words)
        shift = {"left": 0.0, "center": 0.5, "right": 1.0}.get(align, 0.0) * (width - font.getlength(line))
        self.draw.text((x + shift, base), line, font=font, fill=255, anchor="ls")

    def rule(self, x0: float, x1: float, y: float, thickness: int) -> None:
        self.draw.rectangle((round(x0), round(y), round(x1), round(y) + thickness - 1), fill=255)

    def set_lines(self, flow: _Flow, lines: list[list[str]], font, indent: float = 0.0, justify: bool = False) -> bool:
        """Flow wrapped lines, the first one indented; False once the page is full."""
        for i, line in enumerate(lines):
            band = flow.take(self.leading)
            if band is None:
                return False
            x, y, width = band
            first = indent if i == 0 else 0.0
            last = i == len(lines) - 1
            self.text(x + first, y, self.leading, line, font, width - first,
                      "justify" if justify and not last else "left")
        return True

    def paragraph(self, flow: _Flow) -> bool:
        indent = self.size * 1.5 if self.indent_paragraphs else 0.0
        flow.skip(0.2 * self.leading if self.indent_paragraphs else 0.6 * self.leading)
        font = self.body
        if self.rng.random() < 0.05:  # a quotation or a note
            font = _face(self.body_face, "italic", self.size)
        width = flow.columns[flow.column][1]
        return self.set_lines(flow, _wrap(_paragraph(self.rng), font, width, indent), font, indent, self.justify)

    def heading(self, flow: _Flow) -> bool:
        self.section += 1
        size = self.rng.uniform(11, 14) * self.pt
        font = _face(self.head_face, "bolditalic" if self.rng.random() < 0.15 else "bold", size)
        title = _title(self.rng, 1, 5)
        if self.rng.random() < 0.6:  # numbered: "3 Title" or "3.2 Title"
            number = str(self.section) if self.rng.random() < 0.6 else f"{self.section}.{self.rng.integers(1, 6)}"
            title = f"{number} {title}"
        flow.skip(self.leading)
        band = flow.take(size * 1.4, keep=2 * self.leading)
        if band is None:
            return False
        x, y, width = band
        self.text(x, y, size * 1.4, title.split(), font, width)
        flow.skip(0.3 * self.leading)
        return True

    def listing(self, flow: _Flow) -> bool:
        kind = self.rng.integers(3)
        bullet = next(c for c in ("\u2022", "\u2013", "-") if _has_glyph(self.body, c))
        markers = [bullet if kind == 0 else f"{i}." if kind == 1 else f"({chr(96 + i)})" for i in range(1, 9)]
        count = int(self.rng.integers(2, 7, endpoint=True))
        indent = self.size * self.rng.uniform(0, 2)
        hang = indent + max(self.body.getlength(m) for m in markers[:count]) + self.size * 0.6
        flow.skip(0.5 * self.leading)
        for marker in markers[:count]:
            width = flow.columns[flow.column][1]
            lines = _wrap(_paragraph(self.rng, (1, 2)), self.body, width - hang)
            band = flow.take(self.leading)
            if band is None:
                return False
            x, y, _ = band
            self.text(x + indent, y, self.leading, [marker], self.body)
            self.text(x + hang, y, self.leading, lines[0], self.body)
            for line in lines[1:]:
                band = flow.take(self.leading)
                if band is None:
                    return False
                self.text(band[0] + hang, band[1], self.leading, line, self.body)
        flow.skip(0.5 * self.leading)
        return True

    def table(self, flow: _Flow) -> bool:
        rng = self.rng
        size = self.size * rng.uniform(0.85, 1.0)
        font, bold = _face(self.body_face, "regular", size), _face(self.body_face, "bold", size)
        kinds = [4, *rng.integers(0, 5, size=int(rng.integers(1, 5, endpoint=True)))]
        header = [_words(rng, 1)[0].capitalize() for _ in kinds]
        rows = [[_title(rng, 1, 3) if k == 4 and j == 0 else _cell(rng, k) for j, k in enumerate(kinds)]
                for _ in range(int(rng.integers(3, 10, endpoint=True)))]
        pad = size * rng.uniform(0.4, 0.9)
        widths = [max(bold.getlength(header[j]), *(font.getlength(r[j]) for r in rows)) + 2 * pad
                  for j in range(len(kinds))]
        available = flow.columns[flow.column][1]
        while len(widths) > 2 and sum(widths) > available:
            widths.pop()
        if sum(widths) > available:
            return True  # too wide for this column: leave it out
        row_height = size * rng.uniform(1.3, 1.7)
        grid = rng.random() < 0.4
        caption = rng.random() < 0.5
        caption_height = self.leading * 1.3 if caption else 0.0
        flow.skip(self.leading)
        band = flow.take(row_height * (len(rows) + 1) + caption_height + 2 * self.line_width)
        if band is None:
            return False
        x, y, width = band
        x += (width - sum(widths)) / 2 if rng.random() < 0.5 else 0.0
        if caption:
            self.text(x, y, self.leading, ["Table", f"{rng.integers(1, 12)}.", *_title(rng, 2, 6).split()],
                      _face(self.body_face, "italic", size))
            y += caption_height
        edges = np.cumsum([x, *widths])
        for r, cells in enumerate([header, *rows]):
            top = y + r * row_height
            for j, cell in enumerate(cells[:len(widths)]):
                align = "left" if kinds[j] == 4 else "right"
                self.text(edges[j] + pad, top, row_height, [cell], bold if r == 0 else font, widths[j] - 2 * pad, align)
        bottom = y + (len(rows) + 1) * row_height
        thick = self.line_width * (1 if grid else 2)
        self.rule(edges[0], edges[-1], y, thick)
        self.rule(edges[0], edges[-1], y + row_height, self.line_width)
        self.rule(edges[0], edges[-1], bottom, thick)
        if grid:
            for r in range(2, len(rows) + 1):
                self.rule(edges[0], edges[-1], y + r * row_height, self.line_width)
            for edge in edges:
                self.draw.rectangle((round(edge), round(y), round(edge) + self.line_width - 1, round(bottom)), fill=255)
        flow.skip(self.leading)
        return True

    def figure(self, flow: _Flow) -> bool:
        """Content that is not text, which a cleaner must keep: a grey bar chart, a photograph, a hatched pen
        drawing or a stamp, with a caption."""
        rng = self.rng
        width = flow.columns[flow.column][1]
        fig_w = round(width * rng.uniform(0.45, 1.0))
        fig_h = round(fig_w * rng.uniform(0.4, 0.8))
        flow.skip(self.leading)
        band = flow.take(fig_h + 1.6 * self.leading)
        if band is None:
            return False
        x, y, band_width = band
        x0, y0 = round(x + (band_width - fig_w) * rng.uniform(0, 1)), round(y)
        kind = rng.integers(4)
        art = (self._chart, self._photo, self._drawing, self._stamp)[kind](fig_h, fig_w)
        region = np.asarray(self.canvas.crop((x0, y0, x0 + fig_w, y0 + fig_h)))
        self.canvas.paste(Image.fromarray(np.maximum(region, art)), (x0, y0))
        caption = ["Figure", f"{rng.integers(1, 30)}.", *_title(rng, 2, 7).split()]
        self.text(x0, y0 + fig_h + 0.3 * self.leading, self.leading, caption, _face(self.body_face, "italic",
                                                                                   self.size * 0.9))
        flow.skip(0.5 * self.leading)
        return True

    def _chart(self, height: int, width: int) -> np.ndarray:
        """Bars in several shades of grey on axes with tick labels."""
        rng, art = self.rng, Image.new("L", (width, height), 0)
        draw, line = ImageDraw.Draw(art), self.line_width
        left, bottom = round(width * 0.1), round(height * 0.88)
        draw.rectangle((left, 0, left + line - 1, bottom), fill=255)
        draw.rectangle((left, bottom, width - 1, bottom + line - 1), fill=255)
        bars = int(rng.integers(3, 9))
        slot = (width - left) / bars
        small = _face(self.body_face, "regular", self.size * 0.7)
        for i in range(bars):
            top = round(bottom - rng.uniform(0.15, 0.95) * bottom)
            x0, x1 = round(left + (i + 0.2) * slot), round(left + (i + 0.8) * slot)
            draw.rectangle((x0, top, x1, bottom - 1), fill=int(rng.integers(40, 200)))
            if rng.random() < 0.5:
                draw.rectangle((x0, top, x1, bottom - 1), outline=255, width=line)
            draw.text(((x0 + x1) / 2, bottom + line), str(i + 1), font=small, fill=255, anchor="mt")
        return np.asarray(art)

    def _photo(self, height: int, width: int) -> np.ndarray:
        """A continuous-tone picture: smooth shapes, shading and grain over the full grey range, in a frame."""
        rng = self.rng
        tone = np.zeros((height, width), np.float32)
        for cells, weight in ((3, 1.0), (9, 0.5), (27, 0.25)):
            coarse = rng.random((cells, cells)).astype(np.float32)
            tone += weight * cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        tone += 0.05 * rng.standard_normal((height, width)).astype(np.float32)
        low, high = np.percentile(tone, (1, 99))
        photo = np.clip((tone - low) / max(high - low, 1e-6), 0, 1) * rng.uniform(0.6, 0.95)
        art = np.rint(photo * 255).astype(np.uint8)
        frame = self.line_width
        art[:frame], art[-frame:], art[:, :frame], art[:, -frame:] = 255, 255, 255, 255
        return art

    def _drawing(self, height: int, width: int) -> np.ndarray:
        """A pen-and-ink drawing: outlined shapes filled with fine hatching and cross-hatching."""
        rng, art = self.rng, Image.new("L", (width, height), 0)
        draw, line = ImageDraw.Draw(art), max(1, self.line_width // 2)
        spacing = max(3.0, self.pt * rng.uniform(1.2, 3.0))
        for _ in range(int(rng.integers(2, 6))):
            cx, cy = rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height
            rx, ry = rng.uniform(0.1, 0.35) * width, rng.uniform(0.1, 0.35) * height
            shape = Image.new("L", (width, height), 0)
            ImageDraw.Draw(shape).ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=255)
            hatch = Image.new("L", (width, height), 0)
            hatch_draw = ImageDraw.Draw(hatch)
            for angle in rng.uniform(0, np.pi, int(rng.integers(1, 3))):
                dx, dy = np.cos(angle), np.sin(angle)
                reach = width + height
                for offset in np.arange(-reach, reach, spacing):
                    px, py = cx - dy * offset, cy + dx * offset
                    hatch_draw.line((px - dx * reach, py - dy * reach, px + dx * reach, py + dy * reach),
                                    fill=int(rng.integers(160, 256)), width=line)
            art.paste(hatch, (0, 0), shape)
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), outline=255, width=self.line_width)
        return np.asarray(art)

    def _rules(self, height: int, width: int) -> np.ndarray:
        """The ruling of a table: thin horizontal and vertical lines on a grid."""
        art = Image.new("L", (width, height), 0)
        draw, line = ImageDraw.Draw(art), self.line_width
        for y in np.linspace(0, height - line, int(self.rng.integers(4, 9))):
            draw.rectangle((0, round(y), width - 1, round(y) + line - 1), fill=255)
        for x in np.linspace(0, width - line, int(self.rng.integers(3, 6))):
            draw.rectangle((round(x), 0, round(x) + line - 1, height - 1), fill=255)
        return np.asarray(art)

    def _stamp(self, height: int, width: int) -> np.ndarray:
        """A rubber stamp in lighter ink, at an angle: two rings with a word in the middle."""
        rng = self.rng
        side = min(height, width)
        art = Image.new("L", (side, side), 0)
        draw, level = ImageDraw.Draw(art), int(rng.integers(90, 200))
        ring = max(2, round(side * 0.03))
        draw.ellipse((ring, ring, side - ring, side - ring), outline=level, width=ring)
        draw.ellipse((side * 0.18, side * 0.18, side * 0.82, side * 0.82), outline=level, width=max(1, ring // 2))
        word = _words(rng, 1)[0].upper()
        font = _face(self.head_face, "bold", side * 0.5 / max(3, len(word)))
        draw.text((side / 2, side / 2), word, font=font, fill=level, anchor="mm")
        art = art.rotate(rng.uniform(-40, 40), resample=Image.BILINEAR)
        placed = np.zeros((height, width), np.uint8)
        left = int(rng.integers(0, width - side + 1))
        placed[:, left:left + side] = np.asarray(art)
        return placed

    def furniture(self, left: float, right: float, top: float, bottom: float) -> None:
        """Running head and page number, in the margins."""
        rng, small = self.rng, self.size * 0.85
        if rng.random() < 0.4:
            font = _face(self.body_face, "italic" if rng.random() < 0.5 else "regular", small)
            y = top - 10 * self.mm
            self.text(left, y, small * 1.2, _title(rng, 2, 6).split(), font, right - left,
                      ["left", "center", "right"][rng.integers(3)])
            if rng.random() < 0.5:
                self.rule(left, right, y + small * 1.5, self.line_width)
        if rng.random() < 0.7:
            self.text(left, bottom + 8 * self.mm, small * 1.2, [str(rng.integers(1, 400))], self.body, right - left,
                      ["center", "right"][rng.integers(2)])

    def compose(self) -> None:
        rng, mm = self.rng, self.mm
        left, top = rng.uniform(20, 25) * mm, rng.uniform(18, 25) * mm
        right, bottom = self.width - left, self.height - rng.uniform(20, 28) * mm
        self.furniture(left, right, top, bottom)
        if rng.random() < 0.85:
            size = rng.uniform(14, 20) * self.pt
            font = _face(self.head_face, "bold" if rng.random() < 0.8 else "regular", size)
            align = "center" if rng.random() < 0.5 else "left"
            for line in _wrap(_title(rng, 2, 9).split(), font, right - left):
                self.text(left, top, size * 1.3, line, font, right - left, align)
                top += size * 1.3
            if rng.random() < 0.4:  # author or date line
                font = _face(self.body_face, "italic", self.size)
                self.text(left, top, self.leading, _title(rng, 2, 4).split(), font, right - left, align)
                top += self.leading
            top += self.leading
        if rng.random() < 0.1:  # the last page of a chapter
            bottom = top + (bottom - top) * rng.uniform(0.2, 0.8)
        gutter = rng.uniform(5, 9) * mm
        if rng.random() < 0.3:
            half = (right - left - gutter) / 2
            flow = _Flow([(left, half), (left + half + gutter, half)], top, bottom)
        else:
            flow = _Flow([(left, right - left)], top, bottom)
        blocks = [self.paragraph, self.heading, self.listing, self.table, self.figure]
        previous = self.heading
        while True:
            block = blocks[rng.choice(5, p=[0.6, 0.13, 0.11, 0.09, 0.07])]
            if block == previous == self.heading:
                continue
            if not block(flow):
                return
            previous = block


def _shaded(page: _Page, rng: np.random.Generator) -> np.ndarray:
    """The page's ink coverage as a float page, with a random ink tone (black to dark grey)."""
    ink = rng.uniform(0.0, 0.15)
    shade = (1 - np.arange(256, dtype=np.float32) * np.float32((1 - ink) / 255))
    return shade[np.asarray(page.canvas)]


def render_page(rng: np.random.Generator, dpi: int = 300, size_mm: tuple[float, float] = (210, 297)) -> np.ndarray:
    """A clean page (float32 H x W in [0, 1], 1 = white) with a plausible layout and text sizes true to the dpi,
    typeset from the generator's draws alone: same generator state and dpi, same page."""
    page = _Page(rng, dpi, size_mm)
    page.compose()
    return _shaded(page, rng)


FIGURE_KINDS = ("chart", "photo", "drawing", "stamp", "rules")


def render_figures(rng: np.random.Generator, dpi: int = 100, size_mm: tuple[float, float] = (148, 210)
                   ) -> tuple[np.ndarray, dict[str, tuple[slice, slice]]]:
    """A clean page holding one of each kind of content that is not text (FIGURE_KINDS: a grey bar chart, a
    photograph, a hatched drawing, a stamp, a ruled table without text), and where each one is: what a cleaner
    is checked on for keeping figures."""
    page = _Page(rng, dpi, size_mm)
    margin = round(10 * page.mm)
    cell_w, cell_h = (page.width - 3 * margin) // 2, (page.height - 4 * margin) // 3
    regions = {}
    for index, kind in enumerate(FIGURE_KINDS):
        row, column = divmod(index, 2)
        y0, x0 = margin + row * (cell_h + margin), margin + column * (cell_w + margin)
        art = getattr(page, f"_{kind}")(cell_h, cell_w)
        page.canvas.paste(Image.fromarray(art), (x0, y0))
        regions[kind] = (slice(y0, y0 + cell_h), slice(x0, x0 + cell_w))
    return _shaded(page, rng), regions


def toned_figures(page_rng: np.random.Generator, paper_rng: np.random.Generator, dpi: int = 150
                  ) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[slice, slice]]]:
    """The clean page of figures (`render_figures`), the same page scanned as uint8 on lightly toned, unevenly lit
    paper (`noise.faint_ink` at contrast 0.9, half strength), and the figures' regions: the page the shipped
    model's figure bars and the benchmark's figure rows score."""
    clean, regions = render_figures(page_rng, dpi)
    return clean, to_uint8(noise.faint_ink(clean, 0.9, paper_rng, strength=0.5)), regions


def synth_pages(out: Path, pages: int, dpi: int = 300, seed: int = 0,
                corrupt: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                on_page: Callable[[int, int], None] | None = None, figures: bool = False) -> list[tuple[Path, Path]]:
    """Write `pages` pairs as out/dirty/page-NNNN.png and out/clean/page-NNNN.png; returns the (dirty, clean)
    paths. Page k draws from its own generator seeded with (seed, k), so it is the same whatever `pages` is,
    and a rerun overwrites each file atomically. With `figures`, the pages are A5 pages of figures
    (`render_figures`), which text pages hold too rarely for a model to learn to keep them, rather than A4 text
    pages. `corrupt(clean, rng)` makes the dirty page; by default a random recipe from cleandoc.noise.
    `on_page(done, total)` reports progress."""
    if corrupt is None:
        def corrupt(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return noise.corrupt(page, noise.random_recipe(rng), rng)

    out = Path(out)
    (out / "dirty").mkdir(parents=True, exist_ok=True)
    (out / "clean").mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(pages):
        rng = np.random.default_rng([seed, index])
        clean = render_figures(rng, dpi)[0] if figures else render_page(rng, dpi)
        dirty = corrupt(clean, rng)
        name = f"page-{index + 1:04d}.png"
        write_page(out / "clean" / name, clean)
        write_page(out / "dirty" / name, dirty)
        written.append((out / "dirty" / name, out / "clean" / name))
        if on_page:
            on_page(index + 1, pages)
    return written
