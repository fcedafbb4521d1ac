"""Checking a drawn line as a picture: is it the line HarfBuzz shapes, or boxes and loose letters?

The report's PDF is rasterised (pypdfium2: PDFium, the engine of Chrome's PDF
viewer). Each Arabic or Bengali line is cut out where the renderer placed it
(`PlacedLine`) and compared with a *reference*: the same string shaped by
HarfBuzz (uharfbuzz) with the same font file and drawn here from the glyph
outlines HarfBuzz gives (even-odd fill). The comparison is the correlation of
the two ink images brought to one size, and the ratio of their aspect ratios.

The check is proven to discriminate: the same comparison against the string
drawn *unshaped* (each character's default glyph, in logical order, as a
renderer without shaping draws it) scores far lower, and the tests show that
a report drawn without shaping, or with a font lacking the script (boxes),
fails it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pypdfium2 as pdfium
import uharfbuzz as hb
from PIL import Image, ImageChops, ImageDraw, ImageOps

from runtime.reports.fonts import Script
from runtime.reports.render import PlacedLine, RenderedReport

SCALE: Final = 3.0
"""Pixels per PDF point when rasterising: 216 dpi, Bengali's marks several pixels high."""
MM: Final = 72 / 25.4
COMPARE_SIZE: Final = (320, 32)
INK: Final = 80
"""Grey level (0 white, 255 black after inversion) from which a pixel counts as ink when cropping."""
_HB_SCRIPT: Final = {Script.ARABIC: ("rtl", "Arab", "ar"), Script.BENGALI: ("ltr", "Beng", "bn")}


@dataclass(frozen=True, slots=True)
class Likeness:
    """How much a drawn line looks like a reference: correlation (1.0 the same) and aspect ratio ratio."""

    correlation: float
    aspect: float

    def close(self, *, correlation: float = 0.8, aspect: float = 0.12) -> bool:
        """Alike enough: correlation at least `correlation`, aspect ratios within `aspect` of each other."""
        return self.correlation >= correlation and abs(self.aspect - 1.0) <= aspect


def rasterise(pdf: bytes) -> list[Image.Image]:
    """Every page of `pdf`, in grey, at `SCALE` pixels per point."""
    document = pdfium.PdfDocument(pdf)
    try:
        return [document[index].render(scale=SCALE).to_pil().convert("L") for index in range(len(document))]
    finally:
        document.close()


def ink(image: Image.Image) -> Image.Image:
    """The image inverted (ink bright) and cropped to its ink."""
    inverted = ImageOps.invert(image.convert("L"))
    box = inverted.point(lambda value: 255 if value >= INK else 0).getbbox()
    if box is None:
        return Image.new("L", (1, 1), 0)
    return inverted.crop(box)


def line_picture(pages: list[Image.Image], placed: PlacedLine) -> Image.Image:
    """The pixels of one placed line (the page's full width, its rows), inverted and cropped to the ink."""
    page = pages[placed.page]
    top, bottom = math.floor(placed.top * MM * SCALE), math.ceil(placed.bottom * MM * SCALE)
    return ink(page.crop((0, top, page.width, bottom)))


class _OutlinePen:
    """Collects glyph outlines from HarfBuzz as polygons, curves flattened, in pixels."""

    def __init__(self, scale: float, dx: float, baseline: float) -> None:
        self.scale, self.dx, self.baseline = scale, dx, baseline
        self.contours: list[list[tuple[float, float]]] = []
        self._current: list[tuple[float, float]] = []

    def _point(self, point: tuple[float, float]) -> tuple[float, float]:
        return (self.dx + point[0] * self.scale, self.baseline - point[1] * self.scale)

    def moveTo(self, point: tuple[float, float]) -> None:  # noqa: N802 - the pen protocol's names
        self._flush()
        self._current = [self._point(point)]

    def lineTo(self, point: tuple[float, float]) -> None:  # noqa: N802
        self._current.append(self._point(point))

    def qCurveTo(self, *points: tuple[float, float]) -> None:  # noqa: N802
        start = self._current[-1]
        scaled = [self._point(point) for point in points]
        for index, control in enumerate(scaled[:-1]):
            end = scaled[-1] if index == len(scaled) - 2 else _mid(control, scaled[index + 1])
            for step in range(1, 9):
                t = step / 8
                self._current.append(
                    (
                        (1 - t) ** 2 * start[0] + 2 * (1 - t) * t * control[0] + t**2 * end[0],
                        (1 - t) ** 2 * start[1] + 2 * (1 - t) * t * control[1] + t**2 * end[1],
                    )
                )
            start = end

    def curveTo(self, *points: tuple[float, float]) -> None:  # noqa: N802
        start = self._current[-1]
        first, second, end = (self._point(point) for point in points[-3:])
        for step in range(1, 11):
            t = step / 10
            a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
            self._current.append(
                (
                    a * start[0] + b * first[0] + c * second[0] + d * end[0],
                    a * start[1] + b * first[1] + c * second[1] + d * end[1],
                )
            )

    def closePath(self) -> None:  # noqa: N802
        self._flush()

    def endPath(self) -> None:  # noqa: N802
        self._flush()

    def _flush(self) -> None:
        if len(self._current) >= 3:
            self.contours.append(self._current)
        self._current = []


def _mid(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


def reference_picture(text: str, font: Path, script: Script, *, pixels: float, shaped: bool = True) -> Image.Image:
    """`text` drawn from `font`'s outlines: as HarfBuzz shapes it, or (`shaped=False`) one default glyph per
    character in logical order, as a renderer without shaping would. Inverted and cropped to the ink."""
    face = hb.Face(hb.Blob.from_file_path(str(font)))
    hb_font = hb.Font(face)
    scale = pixels / face.upem
    glyphs: list[tuple[int, float, float]] = []  # glyph id, x, y offset (font units)
    if shaped:
        buffer = hb.Buffer()
        buffer.add_str(text)
        buffer.direction, buffer.script, buffer.language = _HB_SCRIPT[script]
        hb.shape(hb_font, buffer, {})
        x = 0.0
        for info, position in zip(buffer.glyph_infos, buffer.glyph_positions, strict=True):
            glyphs.append((info.codepoint, x + position.x_offset, position.y_offset))
            x += position.x_advance
        width = x
    else:
        x = 0.0
        for character in text:
            glyph = hb_font.get_nominal_glyph(ord(character)) or 0
            glyphs.append((glyph, x, 0.0))
            x += hb_font.get_glyph_h_advance(glyph)
        width = x
    size = (int(width * scale) + 40, int(pixels * 3))
    picture = Image.new("1", size, 0)
    for glyph, x_offset, y_offset in glyphs:
        pen = _OutlinePen(scale, 20 + x_offset * scale, pixels * 2 - y_offset * scale)
        hb_font.draw_glyph_with_pen(glyph, pen)
        for contour in pen.contours:
            mask = Image.new("1", size, 0)
            ImageDraw.Draw(mask).polygon(contour, fill=1)
            picture = ImageChops.logical_xor(picture, mask)  # even-odd: counters stay open
    return ink(ImageOps.invert(picture.convert("L")))


def likeness(drawn: Image.Image, reference: Image.Image) -> Likeness:
    """Correlation of the two ink pictures at one size, and the ratio of their aspect ratios."""
    first = list(drawn.resize(COMPARE_SIZE, Image.Resampling.BILINEAR).tobytes())
    second = list(reference.resize(COMPARE_SIZE, Image.Resampling.BILINEAR).tobytes())
    mean_first, mean_second = sum(first) / len(first), sum(second) / len(second)
    a = [value - mean_first for value in first]
    b = [value - mean_second for value in second]
    denominator = math.sqrt(sum(v * v for v in a) * sum(v * v for v in b))
    correlation = sum(x * y for x, y in zip(a, b, strict=True)) / denominator if denominator else 0.0
    aspect = (drawn.width / drawn.height) / (reference.width / reference.height)
    return Likeness(round(correlation, 3), round(aspect, 3))


def script_lines(rendered: RenderedReport, script: Script) -> list[PlacedLine]:
    """The one-row lines of `script` in the report (a wrapped line is compared as a whole elsewhere, not here)."""
    return [line for line in rendered.lines if line.script == script and line.rows == 1]


def side_by_side(pictures: list[Image.Image]) -> Image.Image:
    """Pictures stacked top to bottom on white, for a person to look at (test artifact)."""
    width = max(picture.width for picture in pictures) + 20
    height = sum(picture.height + 10 for picture in pictures) + 10
    sheet = Image.new("L", (width, height), 0)
    y = 10
    for picture in pictures:
        sheet.paste(picture, (10, y))
        y += picture.height + 10
    return ImageOps.invert(sheet)


def covered(text: str, font: Path) -> bool:
    """Whether `font` has a glyph for every character of `text` (so the reference needs no other font)."""
    hb_font = hb.Font(hb.Face(hb.Blob.from_file_path(str(font))))
    return all(hb_font.get_nominal_glyph(ord(character)) for character in text)


def shaping_matters(text: str, font: Path, script: Script) -> bool:
    """Whether HarfBuzz draws `text` with other glyphs than one default glyph per character (joined Arabic forms,
    Bengali conjuncts and reordered vowel signs): only such a line can tell shaped from unshaped drawing."""
    hb_font = hb.Font(hb.Face(hb.Blob.from_file_path(str(font))))
    buffer = hb.Buffer()
    buffer.add_str(text)
    buffer.direction, buffer.script, buffer.language = _HB_SCRIPT[script]
    hb.shape(hb_font, buffer, {})
    shaped = [info.codepoint for info in buffer.glyph_infos]
    if buffer.direction == "rtl":
        shaped.reverse()
    return shaped != [hb_font.get_nominal_glyph(ord(character)) or 0 for character in text]
