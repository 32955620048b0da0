"""What cleaning is worth to OCR: Tesseract's character error rate on pages cleaned by cleandoc, beside doing
nothing and beside unpaper with the settings OCRmyPDF's `--clean` gives it, on the same pages.

The reference text of a page is the `.txt` file beside its dirty page when there is one, else what Tesseract
reads on its clean target (an exact, noise-free page, so what is left are the errors the noise causes).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from rapidfuzz.distance import Levenshtein

from .data import Pair
from .imageio import PageError, as_uint8, encode_page, read_image

if TYPE_CHECKING:
    from .api import Cleaner

OCR_METHODS = ("do nothing", "unpaper", "cleandoc")
# What OCRmyPDF runs unpaper with for --clean (ocrmypdf/_exec/unpaper.py): no layout detection, no deskew, no
# filters that remove grey or black areas, no border alignment.
UNPAPER_CLEAN_ARGS = ("--layout", "none", "--mask-scan-size", "100", "--no-border-align", "--no-mask-center",
                      "--no-grayfilter", "--no-blackfilter", "--no-deskew")
DEFAULT_DPI = 300


class OcrError(Exception):
    """Tesseract or unpaper missing or failing; str() is one line."""


def _program(name: str, package: str) -> str:
    found = shutil.which(name)
    if not found:
        raise OcrError(f"{name} not found: install it (e.g. apt-get install {package})")
    return found


def tesseract_text(page: np.ndarray, dpi: float = DEFAULT_DPI) -> str:
    """What Tesseract reads on an 8-bit page, in English."""
    result = subprocess.run([_program("tesseract", "tesseract-ocr"), "stdin", "stdout", "--dpi", str(round(dpi)),
                             "-l", "eng"], input=encode_page(page, ".png"), capture_output=True, timeout=600)
    if result.returncode != 0:
        raise OcrError(f"tesseract failed: {result.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    return result.stdout.decode("utf-8", errors="replace")


def unpaper_clean(page: np.ndarray, dpi: float = DEFAULT_DPI) -> np.ndarray:
    """The page as unpaper cleans it with OCRmyPDF's --clean settings."""
    with tempfile.TemporaryDirectory(prefix="cleandoc-unpaper-") as folder:
        source, target = Path(folder) / "in.pgm", Path(folder) / "out.pgm"
        cv2.imwrite(str(source), page)
        result = subprocess.run([_program("unpaper", "unpaper"), "--quiet", "--dpi", str(round(dpi)),
                                 *UNPAPER_CLEAN_ARGS, str(source), str(target)], capture_output=True, timeout=600)
        if result.returncode != 0 or not target.exists():
            raise OcrError(f"unpaper failed: {result.stderr.decode(errors='replace').strip()[:200]}")
        cleaned = cv2.imread(str(target), cv2.IMREAD_GRAYSCALE)
    return cleaned


def normalise(text: str) -> str:
    """Text as compared: runs of whitespace made one space, ends trimmed (layout is not what OCR is scored on)."""
    return re.sub(r"\s+", " ", text).strip()


def edit_distance(text: str, reference: str) -> int:
    """Character edits (insertions, deletions, substitutions) from the reference to the text, normalised."""
    return Levenshtein.distance(normalise(text), normalise(reference))


@dataclass
class OcrScore:
    """One page: its reference's length in characters and each method's character edits against it."""

    name: str
    characters: int
    edits: dict[str, int]

    def cer(self, method: str) -> float:
        return self.edits[method] / max(self.characters, 1)


@dataclass
class OcrReport:
    pages: list[OcrScore] = field(default_factory=list)

    def cer(self, method: str) -> float:
        """Character error rate over every page: all edits over all reference characters."""
        return sum(p.edits[method] for p in self.pages) / max(sum(p.characters for p in self.pages), 1)

    def to_dict(self) -> dict:
        return {"pages": len(self.pages), "cer": {m: self.cer(m) for m in OCR_METHODS},
                "per_page": [asdict(p) for p in self.pages]}


def reference_text(pair: Pair, clean: np.ndarray, dpi: float) -> str:
    """The `.txt` beside the dirty page, else what Tesseract reads on the clean target."""
    text_file = pair.dirty.with_suffix(".txt")
    if text_file.is_file():
        return text_file.read_text(encoding="utf-8", errors="replace")
    return tesseract_text(clean, dpi)


def score_ocr(pairs: Iterable[Pair], cleaner: Cleaner, on_page: Callable[[OcrScore], None] | None = None
              ) -> OcrReport:
    """Tesseract on each dirty page as it is, cleaned by unpaper (OCRmyPDF's --clean) and cleaned by cleandoc,
    scored against the page's reference text. Pages without a recorded resolution are read at 300 dpi."""
    report = OcrReport()
    for pair in pairs:
        try:
            dirty, dpi = read_image(pair.dirty)
            clean, _ = read_image(pair.clean)
        except PageError as exc:
            raise OcrError(f"{pair.dirty}: {exc}") from None
        dirty, clean = as_uint8(dirty), as_uint8(clean)
        dpi = dpi[0] if dpi else DEFAULT_DPI
        reference = reference_text(pair, clean, dpi)
        pages = {"do nothing": dirty, "unpaper": unpaper_clean(dirty, dpi), "cleandoc": cleaner.run(dirty)}
        edits = {method: edit_distance(tesseract_text(page, dpi), reference) for method, page in pages.items()}
        score = OcrScore(pair.name, len(normalise(reference)), edits)
        report.pages.append(score)
        if on_page:
            on_page(score)
    return report
