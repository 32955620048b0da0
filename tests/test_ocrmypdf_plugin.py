"""The OCRmyPDF plugin: found on the entry point, inert without --cleandoc, lazy, and end to end with real OCRmyPDF
and Tesseract on a generated scanned PDF."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types
from importlib.metadata import entry_points
from pathlib import Path

import img2pdf
import numpy as np
import pypdfium2 as pdfium
import pytest
from PIL import Image

from cleandoc import ocrmypdf_plugin
from cleandoc.synth import render_page

NEEDS_OCR = pytest.mark.skipif(not (shutil.which("tesseract") and shutil.which("gs")),
                               reason="needs Tesseract and Ghostscript (apt-get install tesseract-ocr ghostscript)")


def options(**given):
    base = {"cleandoc": False, "cleandoc_final": False, "cleandoc_model": "default", "cleandoc_binarize": False,
            "jobs": 1, "tesseract": None}
    return types.SimpleNamespace(**{**base, **given})


def scanned_pdf(path: Path) -> Path:
    """One rendered page at 200 dpi on stained, toned paper, as a scanner would put it in a PDF."""
    rng = np.random.default_rng(3)
    page = render_page(rng, 200, (105, 148))
    yy, xx = np.mgrid[0:page.shape[0], 0:page.shape[1]]
    stain = 0.75 + 0.2 * np.cos(xx / 97.0) * np.sin(yy / 131.0)
    dirty = np.clip(page * stain * 255, 0, 255).astype(np.uint8)
    path.write_bytes(img2pdf.convert(_png(dirty), layout_fun=img2pdf.get_fixed_dpi_layout_fun((200, 200))))
    return path


def _png(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG", dpi=(200, 200))
    return buffer.getvalue()


def test_the_plugin_is_registered_on_ocrmypdfs_entry_point():
    found = [point for point in entry_points(group="ocrmypdf") if point.name == "cleandoc"]
    assert found and found[0].value == "cleandoc.ocrmypdf_plugin"


def test_importing_the_plugin_loads_no_model_and_no_torch():
    process = subprocess.run([sys.executable, "-c", "import sys, cleandoc.ocrmypdf_plugin; "
                              "print('torch' in sys.modules)"], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "False"


def test_inert_without_cleandoc():
    page = types.SimpleNamespace(options=options())
    image = Image.new("L", (40, 30), 200)
    assert ocrmypdf_plugin.filter_ocr_image(page, image) is None  # Tesseract's own hook takes the image
    assert ocrmypdf_plugin.filter_page_image(page, Path("page.png")) == Path("page.png")
    ocrmypdf_plugin.check_options(options())  # nothing to check


def test_its_options_need_cleandoc_and_a_real_model():
    from ocrmypdf.exceptions import BadArgsError

    with pytest.raises(BadArgsError, match="--cleandoc-final needs --cleandoc"):
        ocrmypdf_plugin.check_options(options(cleandoc_final=True))
    with pytest.raises(BadArgsError, match="no such model file"):
        ocrmypdf_plugin.check_options(options(cleandoc=True, cleandoc_model="absent.safetensors"))


def test_the_ocr_image_is_cleaned_once_per_process_and_keeps_its_resolution(monkeypatch, tiny_model_path):
    monkeypatch.setattr(ocrmypdf_plugin, "_cleaners", {})
    loads = []
    from cleandoc.api import Cleaner

    real_load = Cleaner.load
    monkeypatch.setattr(Cleaner, "load", classmethod(lambda cls, *a, **k: loads.append(a) or real_load(*a, **k)))
    page = types.SimpleNamespace(pageno=0, options=options(cleandoc=True, cleandoc_model=str(tiny_model_path),
                                                           cleandoc_binarize=True))
    image = Image.new("RGB", (64, 48), (230, 220, 200))
    image.info["dpi"] = (300, 300)
    for _ in range(2):
        cleaned = ocrmypdf_plugin.filter_ocr_image(page, image)
        assert cleaned.mode == "1" and cleaned.size == image.size and cleaned.info["dpi"] == (300, 300)
    assert len(loads) == 1


def test_with_cleandoc_final_the_visible_page_reuses_the_page_cleaned_for_ocr(monkeypatch, tmp_path,
                                                                            tiny_model_path):
    cleaned_sizes = []
    real = ocrmypdf_plugin._cleaned_image
    monkeypatch.setattr(ocrmypdf_plugin, "_cleaned_image",
                        lambda image, opts: cleaned_sizes.append(image.size) or real(image, opts))
    page = types.SimpleNamespace(pageno=3, options=options(cleandoc=True, cleandoc_final=True,
                                                           cleandoc_model=str(tiny_model_path)))
    visible = tmp_path / "visible.png"
    Image.new("L", (64, 48), 200).save(visible, dpi=(200, 200))
    for_ocr = ocrmypdf_plugin.filter_ocr_image(page, Image.open(visible))
    shown = ocrmypdf_plugin.filter_page_image(page, visible)
    assert cleaned_sizes == [(64, 48)]  # cleaned once, for both
    assert np.array_equal(np.asarray(Image.open(shown)), np.asarray(for_ocr))
    assert Image.open(shown).info["dpi"] == pytest.approx((200, 200), rel=1e-3)
    ocrmypdf_plugin.filter_ocr_image(page, Image.new("L", (32, 24), 200))  # shrunk for OCR: not the visible page
    ocrmypdf_plugin.filter_page_image(page, visible)
    assert cleaned_sizes == [(64, 48), (32, 24), (64, 48)]


def test_huge_images_are_shrunk_as_tesseract_needs():
    image = Image.new("L", (40000, 2000), 255)
    image.info["dpi"] = (600, 600)
    shrunk = ocrmypdf_plugin._tesseract_limits(image, options())
    assert max(shrunk.size) <= 32767 and shrunk.size[0] / shrunk.size[1] == pytest.approx(20, rel=0.01)
    assert shrunk.info["dpi"][0] < 600  # the resolution scaled with it, so the text layer stays aligned
    small = Image.new("L", (400, 20), 255)
    assert ocrmypdf_plugin._tesseract_limits(small, options()) is small


def run_ocrmypdf(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrmypdf", "--output-type", "pdf", "-q", *args],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def page_text(path: Path) -> str:
    return pdfium.PdfDocument(str(path))[0].get_textpage().get_text_range()


@NEEDS_OCR
def test_ocrmypdf_with_cleandoc_end_to_end(tmp_path, tiny_model_path):
    source = scanned_pdf(tmp_path / "scan.pdf")
    plain, cleaned, final = tmp_path / "plain.pdf", tmp_path / "cleaned.pdf", tmp_path / "final.pdf"
    assert run_ocrmypdf(str(source), str(plain)).returncode == 0
    result = run_ocrmypdf("--cleandoc", "--cleandoc-model", str(tiny_model_path), str(source), str(cleaned))
    assert result.returncode == 0, result.stderr
    assert page_text(cleaned).strip()  # Tesseract read the cleaned page: a text layer
    visible = pdfium.PdfDocument(str(cleaned))[0].render(scale=1, grayscale=True).to_numpy()
    original = pdfium.PdfDocument(str(source))[0].render(scale=1, grayscale=True).to_numpy()
    assert np.abs(visible.astype(int) - original).mean() < 1  # the visible page is the scan, as it was
    result = run_ocrmypdf("--cleandoc", "--cleandoc-final", "--cleandoc-binarize", "--cleandoc-model",
                          str(tiny_model_path), str(source), str(final))
    assert result.returncode == 0, result.stderr
    shown = pdfium.PdfDocument(str(final))[0].render(scale=1, grayscale=True).to_numpy()
    assert np.abs(shown.astype(int) - original).mean() > 1  # the visible page is the cleaned one
    bad = run_ocrmypdf("--cleandoc-final", str(source), str(tmp_path / "x.pdf"))
    assert bad.returncode != 0 and "--cleandoc-final needs --cleandoc" in bad.stderr
