"""Documents: a PDF or a multi-page TIFF read as pages with their resolution, and written back as a document of
the same kind, atomically, one page in memory at a time.

A PDF page that is one scanned image covering the page is decoded at the image's own resolution (no resampling;
pdfium decodes every filter: Flate, DCT, CCITT, JBIG2, JPX, with palettes, CMYK and decode arrays); any other
page, a masked or rotated image among them, is rendered by pdfium at a resolution: the one asked for, else the
page's image resolution, else 300 dpi. Pixel limits are checked before anything is decoded or rendered. Written
PDF pages keep their size in points and are lossless (img2pdf: grey as Flate, or JPEG if asked; 1-bit as CCITT
G4); TIFF pages keep their resolution (Deflate, or G4 when 1-bit).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, TiffImagePlugin

from .imageio import PageError, as_uint8, encode_page, temporary_name, to_gray, to_uint8

PDF_EXTENSIONS = frozenset({".pdf"})
TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
DEFAULT_DPI = 300.0  # a rendered page with no image to take its resolution from
_IMAGE_OBJECT = 3  # FPDF_PAGEOBJ_IMAGE
_PATH_OR_SHADING = (2, 4)  # FPDF_PAGEOBJ_PATH, FPDF_PAGEOBJ_SHADING: drawn content besides the scan
_COVERAGE = 0.01  # an image within 1% of the page's width and height on every side covers the page


@dataclass
class DocumentPage:
    """One page: gray samples (uint8 or uint16), its resolution in dpi (x, y) and, for a PDF, its size in points."""

    pixels: np.ndarray
    dpi: tuple[float, float]
    size_pt: tuple[float, float] | None = None


def is_document(path: Path) -> bool:
    """A PDF, or a TIFF of more than one page (a single-page TIFF is an image)."""
    suffix = path.suffix.lower()
    if suffix in PDF_EXTENSIONS:
        return True
    if suffix not in TIFF_EXTENSIONS:
        return False
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError, Image.DecompressionBombError):
        return False  # not readable as a TIFF: the image path reports why


def read_document(path: Path, dpi: float | None, max_pixels: int) -> Iterator[DocumentPage]:
    """The pages of a PDF or multi-page TIFF, one at a time; PageError (one line) for a document or page that
    cannot be read."""
    if path.suffix.lower() in PDF_EXTENSIONS:
        return _pdf_pages(path, dpi, max_pixels)
    return _tiff_pages(path, max_pixels)


def _megapixels(width: float, height: float) -> str:
    return f"{width * height / 1e6:.1f} MP"


def _check_pixels(width: float, height: float, max_pixels: int, where: str) -> None:
    if width * height > max_pixels:
        raise PageError(f"{where} would be {round(width)}x{round(height)} ({_megapixels(width, height)}), over the "
                        f"{max_pixels / 1e6:.0f} MP limit")


def _pdfium_reason(exc: Exception) -> str:
    text = str(exc)
    if "password" in text.lower() or "security" in text.lower():
        return "encrypted PDF (it needs a password)"
    if "format" in text.lower() or "corrupt" in text.lower():
        return "damaged or not a PDF"
    return f"cannot read the PDF ({text.splitlines()[0] if text else type(exc).__name__})"


def _pdf_pages(path: Path, dpi: float | None, max_pixels: int) -> Iterator[DocumentPage]:
    import pikepdf
    import pypdfium2 as pdfium

    facts = None
    try:
        facts = pikepdf.open(path)
    except pikepdf.PasswordError:
        raise PageError("encrypted PDF (it needs a password)") from None
    except pikepdf.PdfError:
        pass  # qpdf could not repair it; pdfium may still read it, and every page is then rendered
    with facts or contextlib.nullcontext():
        if facts is not None and len(facts.pages) == 0:
            raise PageError("the PDF has no pages")
        try:
            document = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            raise PageError(_pdfium_reason(exc)) from None
        try:
            if len(document) == 0:
                raise PageError("the PDF has no pages")
            for index in range(len(document)):
                try:
                    page = document[index]
                except pdfium.PdfiumError:
                    raise PageError(f"page {index + 1} is damaged (it cannot be loaded)") from None
                try:
                    page_facts = facts.pages[index] if facts is not None and index < len(facts.pages) else None
                    read = _pdf_page(page, page_facts, dpi, max_pixels, index + 1)
                except pdfium.PdfiumError as exc:
                    raise PageError(f"page {index + 1} is damaged ({exc})") from None
                finally:
                    page.close()
                yield read
        finally:
            document.close()


def _masked(facts) -> bool:
    """True when an image on the page is drawn through a mask (or is one): only rendering shows it right."""
    if facts is None:
        return True
    try:
        images = facts.get_images() if hasattr(facts, "get_images") else facts.images
        return any(key in image for image in images.values() for key in ("/SMask", "/Mask", "/ImageMask"))
    except Exception:  # page facts are a shortcut: when they cannot be read, render
        return True


_GENERAL_FILTERS = frozenset({"/FlateDecode", "/LZWDecode", "/ASCII85Decode", "/ASCIIHexDecode", "/RunLengthDecode",
                              "/Fl", "/LZW", "/A85", "/AHx", "/RL"})


def _damaged_image(facts) -> str | None:
    """Why the page's one image cannot be decoded (its compressed data damaged), else None. pdfium would decode a
    damaged stream to a blank or black image without a word, so its data is checked first: general filters by
    qpdf, JPEG by Pillow (JBIG2, JPX and CCITT are left to pdfium)."""
    import pikepdf

    try:
        images = list((facts.get_images() if hasattr(facts, "get_images") else facts.images).values())
    except Exception:
        return None
    if len(images) != 1:
        return None
    stream = images[0]
    try:
        filters = stream.get("/Filter")
        names = [str(f) for f in filters] if isinstance(filters, pikepdf.Array) else [str(filters)] if filters else []
    except Exception:  # a name that is not text, a filter that is not a name
        return "its image dictionary is damaged"
    try:
        if names in (["/DCTDecode"], ["/DCT"]):
            with Image.open(io.BytesIO(stream.read_raw_bytes())) as image:
                image.load()
        elif names and all(name in _GENERAL_FILTERS for name in names):
            stream.read_bytes(decode_level=pikepdf.StreamDecodeLevel.generalized)
    except (pikepdf.PdfError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return f"its {' + '.join(name.lstrip('/') for name in names)} image data is damaged"
    return None


def _full_page_image(page, facts):
    """The one upright image that covers the page, when that is all the page draws (an invisible text layer aside),
    else None."""
    objects = list(page.get_objects())
    images = [obj for obj in objects if obj.type == _IMAGE_OBJECT]
    if len(images) != 1 or any(obj.type in _PATH_OR_SHADING for obj in objects) or _masked(facts):
        return None
    image = images[0]
    matrix = image.get_matrix()
    if abs(matrix.b) > 1e-6 or abs(matrix.c) > 1e-6 or matrix.a <= 0 or matrix.d <= 0:
        return None  # rotated, skewed or flipped: rendering draws it as the page shows it
    left, bottom, right, top = image.get_bounds()
    box_left, box_bottom, box_right, box_top = page.get_cropbox()
    width, height = box_right - box_left, box_top - box_bottom
    slack_x, slack_y = _COVERAGE * width, _COVERAGE * height
    if (abs(left - box_left) > slack_x or abs(right - box_right) > slack_x or abs(bottom - box_bottom) > slack_y
            or abs(top - box_top) > slack_y):
        return None
    return image


def _gray(pixels: np.ndarray) -> np.ndarray:
    """pdfium's bitmap (gray, BGR, BGRx or BGRA) as one 8-bit gray plane."""
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = pixels[..., :3]  # BGRx: the fourth byte is padding
    gray = to_gray(pixels)
    return as_uint8(gray)


def _pdf_page(page, facts, dpi: float | None, max_pixels: int, number: int) -> DocumentPage:
    import pypdfium2 as pdfium

    width_pt, height_pt = page.get_size()  # as shown: /Rotate applied
    turns = (page.get_rotation() // 90) % 4
    image = _full_page_image(page, facts)
    if image is not None and dpi is None:
        px_w, px_h = image.get_px_size()
        _check_pixels(px_w, px_h, max_pixels, f"page {number}")
        if damage := _damaged_image(facts):
            raise PageError(f"page {number}: {damage}")
        try:
            pixels = np.rot90(_gray(image.get_bitmap(render=False).to_numpy()), -turns)
        except pdfium.PdfiumError:
            pixels = None  # an encoding pdfium cannot decode on its own: render it below
        if pixels is not None:
            height_px, width_px = pixels.shape
            return DocumentPage(np.ascontiguousarray(pixels), (width_px * 72 / width_pt, height_px * 72 / height_pt),
                                (width_pt, height_pt))
    resolution = dpi or _image_dpi(page) or DEFAULT_DPI
    _check_pixels(width_pt * resolution / 72, height_pt * resolution / 72, max_pixels, f"page {number} at "
                  f"{resolution:g} dpi")
    try:
        bitmap = page.render(scale=resolution / 72, grayscale=True)
    except pdfium.PdfiumError as exc:
        raise PageError(f"page {number} cannot be rendered ({exc})") from None
    pixels = _gray(bitmap.to_numpy())
    return DocumentPage(pixels, (pixels.shape[1] * 72 / width_pt, pixels.shape[0] * 72 / height_pt),
                        (width_pt, height_pt))


def _image_dpi(page) -> float | None:
    """The highest resolution of the images drawn on the page, as drawn."""
    best = None
    for obj in page.get_objects():
        if obj.type != _IMAGE_OBJECT:
            continue
        left, bottom, right, top = obj.get_bounds()
        px_w, px_h = obj.get_px_size()
        if right - left > 1 and top - bottom > 1:
            found = max(px_w * 72 / (right - left), px_h * 72 / (top - bottom))
            best = found if best is None else max(best, found)
    return round(best) if best else None


def _tiff_pages(path: Path, max_pixels: int) -> Iterator[DocumentPage]:
    try:
        document = Image.open(path)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PageError(f"cannot read the TIFF ({exc})") from None
    with document:
        for number, frame in enumerate(ImageSequence.Iterator(document), start=1):
            _check_pixels(*frame.size, max_pixels, f"page {number}")
            try:
                pixels = pil_gray(frame)
            except (OSError, ValueError) as exc:
                raise PageError(f"page {number} cannot be decoded ({exc})") from None
            dpi = frame.info.get("dpi") or (DEFAULT_DPI, DEFAULT_DPI)
            yield DocumentPage(pixels, (float(dpi[0]), float(dpi[1])))


def pil_gray(frame: Image.Image) -> np.ndarray:
    """A Pillow image (a TIFF frame, a page from OCRmyPDF) as one gray plane, converted as `clean` converts image
    files."""
    if frame.mode in ("I;16", "I;16B", "I;16L"):
        return np.array(frame.convert("I;16"), dtype=np.uint16)
    if frame.mode == "1":
        return np.array(frame.convert("L"))
    if frame.mode in ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "LA"):
        frame = frame.convert("RGBA" if "A" in frame.mode or "transparency" in frame.info else "RGB")
    gray = to_gray(np.array(frame), order="rgb")  # a copy of its own: it may be cleaned in place
    return gray if gray.dtype.kind == "u" else to_uint8(gray)


class DocumentWriter:
    """Pages added one at a time to a document that appears under its name only when complete, one page in memory
    at a time. A TIFF's frames are appended to a temporary file beside it; a PDF's pages wait in a temporary folder
    beside it, each a small PDF of its own, until `finish` joins them into a temporary file. `finish` renames the
    file into place; `abort`, or a killed process, leaves no document (a later run removes what a writer that is
    no longer running left)."""

    def __init__(self, path: Path, binary: bool = False, jpeg_quality: int | None = None):
        self.path, self.binary, self.jpeg_quality = Path(path), binary, jpeg_quality
        self.temporary = temporary_name(self.path)
        self.pdf = self.path.suffix.lower() in PDF_EXTENSIONS
        self.pages: list[Path] = []  # a PDF's pages, each in its own file
        if self.pdf:
            self.folder = temporary_name(self.path)
            self.folder.mkdir()
        else:
            self.tiff = TiffImagePlugin.AppendingTiffWriter(str(self.temporary), new=True)

    def add(self, cleaned: np.ndarray, page: DocumentPage) -> None:
        if self.pdf:
            target = self.folder / f"{len(self.pages) + 1:06d}.pdf"
            target.write_bytes(_pdf_page_bytes(cleaned, page, self.binary, self.jpeg_quality))
            self.pages.append(target)
            return
        frame = Image.fromarray(cleaned >= 128) if self.binary else Image.fromarray(cleaned)
        frame.save(self.tiff, format="TIFF", compression="group4" if self.binary else "tiff_adobe_deflate",
                   dpi=page.dpi)
        self.tiff.newFrame()

    def finish(self) -> None:
        try:
            if self.pdf:
                _join_pdf(self.pages, self.temporary)
            else:
                self.tiff.close()
            with open(self.temporary, "rb") as file:
                os.fsync(file.fileno())
            os.replace(self.temporary, self.path)
        finally:
            self.abort()

    def abort(self) -> None:
        if self.pdf:
            shutil.rmtree(self.folder, ignore_errors=True)
        else:
            with contextlib.suppress(OSError, ValueError):
                self.tiff.close()
        with contextlib.suppress(OSError):
            self.temporary.unlink()


def _pdf_page_bytes(cleaned: np.ndarray, page: DocumentPage, binary: bool, jpeg_quality: int | None) -> bytes:
    import img2pdf

    if binary:
        encoded = encode_page(cleaned, ".tif", binary=True)
    elif jpeg_quality:
        encoded = encode_page(cleaned, ".jpg", jpeg_quality=jpeg_quality)
    else:
        encoded = encode_page(cleaned, ".png")
    height_px, width_px = cleaned.shape
    width_pt, height_pt = page.size_pt or (width_px * 72 / page.dpi[0], height_px * 72 / page.dpi[1])

    def exactly_the_page(width_px, height_px, dpi):
        return width_pt, height_pt, width_pt, height_pt

    try:
        return img2pdf.convert(encoded, layout_fun=exactly_the_page, nodate=True)
    except ValueError as exc:  # e.g. a page smaller than 3 points, which a PDF cannot have
        raise PageError(f"a page of {width_pt:.1f} x {height_pt:.1f} pt cannot be written as PDF ({exc})") from None


def _join_pdf(pages: list[Path], target: Path) -> None:
    import pikepdf

    with pikepdf.new() as joined, contextlib.ExitStack() as sources:
        for path in pages:
            joined.pages.extend(sources.enter_context(pikepdf.open(path)).pages)
        joined.save(target)
