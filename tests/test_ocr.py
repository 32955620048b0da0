"""OCR-aware evaluation: the character error rate by hand, and `evaluate --ocr` with real Tesseract and unpaper."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import cli
from PIL import Image

from cleandoc import ocr
from cleandoc.synth import render_page

NEEDS_TOOLS = pytest.mark.skipif(not (shutil.which("tesseract") and shutil.which("unpaper")),
                                 reason="needs Tesseract and unpaper (apt-get install tesseract-ocr unpaper)")


def test_edit_distance_and_cer_by_hand():
    assert ocr.edit_distance("the cat", "the cat") == 0
    assert ocr.edit_distance("the  cat\n", " the cat") == 0  # layout is not scored
    assert ocr.edit_distance("tha cat", "the cat") == 1
    assert ocr.edit_distance("the", "the cat") == 4
    score = ocr.OcrScore("p", 10, {"do nothing": 5, "unpaper": 4, "cleandoc": 1})
    report = ocr.OcrReport([score, ocr.OcrScore("q", 30, {"do nothing": 3, "unpaper": 4, "cleandoc": 1})])
    assert score.cer("cleandoc") == 0.1 and report.cer("do nothing") == 8 / 40 and report.cer("cleandoc") == 2 / 40


def test_missing_tesseract_is_one_clear_line(monkeypatch):
    monkeypatch.setattr(ocr.shutil, "which", lambda name: None)
    with pytest.raises(ocr.OcrError, match="tesseract not found: install it"):
        ocr.tesseract_text(np.full((10, 10), 255, np.uint8))


@NEEDS_TOOLS
def test_evaluate_ocr_scores_cleandoc_beside_doing_nothing_and_unpaper(tmp_path, tiny_model_path):
    rng = np.random.default_rng(5)
    clean = np.rint(render_page(rng, 200, (90, 60)) * 255).astype(np.uint8)
    yy, xx = np.mgrid[0:clean.shape[0], 0:clean.shape[1]]
    dirty = np.clip(clean * (0.7 + 0.2 * np.sin(xx / 40.0)), 0, 255).astype(np.uint8)
    for folder, page in (("dirty", dirty), ("clean", clean)):
        (tmp_path / folder).mkdir()
        Image.fromarray(page).save(tmp_path / folder / "page.png", dpi=(200, 200))
        Image.fromarray(page).save(tmp_path / folder / "other.png", dpi=(200, 200))
    (tmp_path / "dirty" / "other.txt").write_text("a reference text given beside the page")
    result = cli("evaluate", "--dirty", tmp_path / "dirty", "--clean", tmp_path / "clean", "--model",
                 tiny_model_path, "--ocr", "--json", tmp_path / "ocr.json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "CER do nothing" in result.stdout and "CER unpaper" in result.stdout and "CER cleandoc" in result.stdout
    figures = json.loads((tmp_path / "ocr.json").read_text())
    assert figures["pages"] == 2 and set(figures["cer"]) == {"do nothing", "unpaper", "cleandoc"}
    pages = {p["name"]: p for p in figures["per_page"]}
    assert pages["other"]["characters"] == len("a reference text given beside the page")  # the .txt is the truth
    assert pages["page"]["characters"] > 50  # read from the clean target
    both = cli("evaluate", "--dirty", tmp_path / "dirty", "--clean", tmp_path / "clean", "--ocr", "--binary")
    assert both.exit_code == 2 and "give one" in both.stderr
