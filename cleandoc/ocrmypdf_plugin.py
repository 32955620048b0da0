"""An OCRmyPDF plugin: Tesseract reads pages cleaned by cleandoc. Inert unless `--cleandoc` is given.

    pip install "cleandoc[ocrmypdf]"
    ocrmypdf --cleandoc in.pdf out.pdf                    # OCR reads cleaned pages; the PDF shows the originals
    ocrmypdf --cleandoc --cleandoc-final in.pdf out.pdf   # the PDF shows the cleaned pages too

OCRmyPDF finds it through the `ocrmypdf` entry point. It imports nothing heavy until a page needs cleaning: each
worker process loads the model once, on its first page.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ocrmypdf import hookimpl
from ocrmypdf.exceptions import BadArgsError

log = logging.getLogger(__name__)
_cleaners: dict[str, object] = {}  # per worker process: model name → Cleaner
# Per worker process: the page last cleaned for OCR under --cleandoc-final, keyed by page number and size. OCRmyPDF
# makes a page's OCR image and then its visible image from the same raster, in the same process, so the visible
# page reuses this instead of being cleaned a second time.
_cleaned_for_ocr: dict[tuple[int, tuple[int, int]], object] = {}
TESSERACT_MAX_SIDE = 32767  # Tesseract cannot read images wider or taller than this
TESSERACT_MAX_BYTES = 2**31 - 1


@hookimpl
def add_options(parser):
    group = parser.add_argument_group("cleandoc", "Clean page images with cleandoc's learned model before OCR")
    group.add_argument("--cleandoc", action="store_true",
                       help="Clean the image Tesseract reads with cleandoc (the visible page is left as it is).")
    group.add_argument("--cleandoc-final", action="store_true",
                       help="Also replace each visible page with its cleaned image (rasterizes every page, as "
                            "--force-ocr does).")
    group.add_argument("--cleandoc-model", default="default", metavar="MODEL",
                       help="A cleandoc model file, or default: the shipped model.")
    group.add_argument("--cleandoc-binarize", action="store_true",
                       help="Make the cleaned images 1-bit black and white.")


def _option(options, name: str, default=None):
    return getattr(options, name, default)


@hookimpl
def check_options(options):
    enabled = _option(options, "cleandoc", False)
    extras = [flag for flag, given in (("--cleandoc-final", _option(options, "cleandoc_final", False)),
                                       ("--cleandoc-binarize", _option(options, "cleandoc_binarize", False)),
                                       ("--cleandoc-model", _option(options, "cleandoc_model", "default")
                                        != "default")) if given]
    if extras and not enabled:
        raise BadArgsError(f"{', '.join(extras)} needs --cleandoc")
    if not enabled:
        return
    from .store import ModelFileError, resolve_model_path

    try:
        resolve_model_path(_option(options, "cleandoc_model", "default"))
    except ModelFileError as exc:
        raise BadArgsError(f"--cleandoc-model: {exc}") from None
    if _option(options, "cleandoc_final", False) and options.lossless_reconstruction:
        from ocrmypdf._options import ProcessingMode

        if options.mode not in (ProcessingMode.default, ProcessingMode.force, ProcessingMode.force_ocr_no_links):
            raise BadArgsError("--cleandoc-final replaces every page with its cleaned image, as --force-ocr does; "
                               f"it cannot be combined with --mode {options.mode}")
        options.mode = ProcessingMode.force


def _cleaner(options):
    """This worker process's Cleaner, loaded on first use: the CPU cores shared among OCRmyPDF's jobs."""
    name = str(_option(options, "cleandoc_model", "default"))
    if name not in _cleaners:
        from .api import Cleaner

        jobs = _option(options, "jobs", None) or os.cpu_count() or 1
        threads = max(1, (os.cpu_count() or 1) // jobs)
        _cleaners[name] = Cleaner.load(name, threads=threads)
    return _cleaners[name]


def _cleaned_image(image, options):
    """The page image cleaned (8-bit grey, or 1-bit), with its resolution kept."""
    from PIL import Image

    from .documents import pil_gray

    binarize = _option(options, "cleandoc_binarize", False)
    cleaned = _cleaner(options).clean(pil_gray(image), binarize=binarize)
    result = Image.fromarray(cleaned > 0 if binarize else cleaned)
    if "dpi" in image.info:
        result.info["dpi"] = image.info["dpi"]
    return result


def _tesseract_limits(image, options):
    """What OCRmyPDF's Tesseract hook would do to the image, since a result of this hook replaces it: huge images
    are shrunk to what Tesseract can read, their resolution scaled to match."""
    from ocrmypdf.imageops import calculate_downsample, downsample_image

    tesseract = getattr(options, "tesseract", None)
    if tesseract is not None and not tesseract.downsample_large_images:
        return image
    threshold = min(getattr(tesseract, "downsample_above", TESSERACT_MAX_SIDE), TESSERACT_MAX_SIDE)
    size = calculate_downsample(image, max_size=(threshold, threshold), max_bytes=TESSERACT_MAX_BYTES)
    return downsample_image(image, size) if size != image.size else image


@hookimpl
def filter_ocr_image(page, image):
    if not _option(page.options, "cleandoc", False):
        return None  # not ours: the next hook (Tesseract's) has the image
    cleaned = _cleaned_image(image, page.options)
    if _option(page.options, "cleandoc_final", False):
        _cleaned_for_ocr.clear()
        _cleaned_for_ocr[(page.pageno, image.size)] = cleaned
    return _tesseract_limits(cleaned, page.options)


@hookimpl
def filter_page_image(page, image_filename: Path) -> Path:
    if not (_option(page.options, "cleandoc", False) and _option(page.options, "cleandoc_final", False)):
        return image_filename
    from PIL import Image

    with Image.open(image_filename) as image:
        cleaned = _cleaned_for_ocr.pop((page.pageno, image.size), None)
        if cleaned is None:  # the OCR image was another size (shrunk for OCR) or made elsewhere: clean this one
            image.load()
            cleaned = _cleaned_image(image, page.options)
        elif "dpi" in image.info:
            cleaned.info["dpi"] = image.info["dpi"]
    target = image_filename.with_name(f"{image_filename.stem}.cleandoc.png")
    cleaned.save(target, dpi=tuple(round(v) for v in cleaned.info.get("dpi", (300, 300))))
    return target
