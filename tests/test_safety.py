"""Nothing is lost silently: a page the model blanks is written with a warning, binarised pages are true 1-bit
images that match thresholding, and the DIBCO figures come with the classic binarisers beside them."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from helpers import cli, write_image
from PIL import Image

from cleandoc.api import Cleaner
from cleandoc.clean import erasure_warning
from cleandoc.files import Job
from cleandoc.imageio import read_gray, write_page
from cleandoc.metrics import binarize, dark_strokes, dibco_scores, strokes_kept
from cleandoc.models import build_model
from cleandoc.store import load_model, save_model

CPU = torch.device("cpu")
TINY = {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1}


def text_page(height: int = 160, width: int = 240, ink: int = 40, paper: int = 235) -> np.ndarray:
    """Paper with rows of short dark strokes, like lines of text."""
    page = np.full((height, width), paper, np.uint8)
    for y in range(12, height - 12, 18):
        for x in range(10, width - 20, 14):
            page[y:y + 8, x:x + 2] = ink
            page[y + 6:y + 8, x:x + 9] = ink
    return page


def blanking_model() -> torch.nn.Module:
    """A model that turns every page white: what a cleaner must never do silently."""
    torch.manual_seed(0)
    model = build_model(TINY)
    with torch.no_grad():
        model.head.bias.fill_(30.0)
    return model.eval()


def faithful_model() -> torch.nn.Module:
    """An untrained tiny U-Net: close to the identity (a contrast stretch), so the strokes stay."""
    torch.manual_seed(0)
    return build_model(TINY).eval()


def test_dark_strokes_find_text_even_faint_and_not_plain_paper():
    page = text_page()
    strokes = dark_strokes(page)
    ink = page < 128
    assert strokes[ink].mean() > 0.9
    assert not dark_strokes(np.full((100, 100), 200, np.uint8)).any()
    noisy = np.clip(200 + np.random.default_rng(0).normal(0, 8, (100, 100)), 0, 255).astype(np.uint8)
    assert dark_strokes(noisy).mean() < 0.01  # sensor noise is not a stroke
    faint = text_page(ink=170, paper=225)  # ink at 75% of the paper's brightness
    assert dark_strokes(faint)[faint < 200].mean() > 0.75
    assert erasure_warning(np.full_like(faint, 255), dark_strokes(faint)) is not None  # erasing it is noticed


def test_strokes_kept_and_the_warning_tell_a_blanked_page_from_a_faithful_one():
    page = text_page()
    strokes = dark_strokes(page)
    assert strokes_kept(page, strokes) == 1.0
    white = np.full_like(page, 255)
    assert strokes_kept(white, strokes) == 0.0
    assert erasure_warning(page, strokes) is None
    warning = erasure_warning(white, strokes)
    assert "0%" in warning and "erased" in warning and "\n" not in warning
    thinner = page.copy()
    thinner[:, 1::14] = 235  # every stroke a pixel thinner: still kept
    assert strokes_kept(thinner, strokes) > 0.9
    assert strokes_kept(white, np.zeros_like(strokes)) == 1.0  # nothing to lose on a blank page


def test_huge_pages_are_checked_at_a_reduced_scale(monkeypatch):
    from cleandoc import metrics

    monkeypatch.setattr(metrics, "CHECK_PIXELS", 160 * 240 // 4)
    page = text_page()
    strokes = dark_strokes(page)
    assert strokes.shape == (80, 120)
    assert strokes_kept(page, strokes) > 0.9 and strokes_kept(np.full_like(page, 255), strokes) == 0


def test_clean_pages_warns_on_a_blanked_page_and_not_on_a_kept_one(tmp_path):
    source = write_image(tmp_path / "in" / "page.png", text_page())
    jobs = [Job(source, tmp_path / "blank" / "page.png")]
    summary = Cleaner(blanking_model()).clean_files(jobs)
    [result] = summary.results
    assert result.status == "cleaned" and len(result.warnings) == 1 and summary.warned == 1
    assert (tmp_path / "blank" / "page.png").exists()  # the page is still written
    summary = Cleaner(faithful_model()).clean_files([Job(source, tmp_path / "kept" / "page.png")])
    assert summary.results[0].warnings == [] and summary.warned == 0


def test_clean_command_names_the_blanked_page_and_counts_it(tmp_path):
    model_path = tmp_path / "blank.safetensors"
    save_model(blanking_model(), model_path)
    write_image(tmp_path / "in" / "a.png", text_page())
    write_image(tmp_path / "in" / "b.png", np.full((64, 64), 240, np.uint8))  # a blank page loses nothing
    result = cli("clean", tmp_path / "in", "-o", tmp_path / "out", "--model", model_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and str(tmp_path / "in" / "a.png") in warnings[0]
    assert "2 cleaned (1 with a warning)" in result.stderr
    quiet = cli("clean", tmp_path / "in", "-o", tmp_path / "out2", "--model", model_path, "-q")
    assert quiet.exit_code == 0 and quiet.stderr.count("warning: ") == 1  # -q still warns


@pytest.mark.parametrize("fmt, compression", [("png", None), ("tif", "group4")])
def test_binarize_writes_one_bit_pages_that_match_thresholding(tmp_path, tiny_model_path, fmt, compression):
    page = text_page()
    write_image(tmp_path / "in" / "p.png", page)
    result = cli("clean", tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_model_path, "--binarize",
                 "--format", fmt, "--device", "cpu")
    assert result.exit_code == 0, result.output
    written = Image.open(tmp_path / "out" / f"p.{fmt}")
    assert written.mode == "1" and written.size == (page.shape[1], page.shape[0])
    assert written.info.get("compression") == compression
    cleaned = Cleaner(load_model(tiny_model_path)[0]).run(page)
    np.testing.assert_array_equal(np.asarray(written), cleaned >= 128)
    np.testing.assert_array_equal(read_gray(tmp_path / "out" / f"p.{fmt}"), binarize(cleaned))  # reads back


def test_binarize_asks_the_model_for_its_binary_style(tmp_path):
    torch.manual_seed(0)
    model = build_model({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1, "binary_style": True})
    for film in model.binary_film:
        torch.nn.init.normal_(film, std=1.0)
    save_model(model, tmp_path / "styled.safetensors")
    page = text_page(paper=140)  # dark paper, which the random binary style turns partly to ink
    write_image(tmp_path / "in" / "p.png", page)
    result = cli("clean", tmp_path / "in", "-o", tmp_path / "out", "--model", tmp_path / "styled.safetensors",
                 "--binarize", "--device", "cpu")
    assert result.exit_code == 0, result.output
    styled = Cleaner(load_model(tmp_path / "styled.safetensors")[0])
    written = read_gray(tmp_path / "out" / "p.png")
    np.testing.assert_array_equal(written, binarize(styled.run(page, binary=True)))
    assert (written != binarize(styled.run(page))).any()


def test_binarize_refuses_jpeg_in_one_line(tmp_path, tiny_model_path):
    write_image(tmp_path / "in" / "p.png", text_page())
    result = cli("clean", tmp_path / "in", "-o", tmp_path / "out", "--model", tiny_model_path, "--binarize",
                 "--format", "jpg")
    assert result.exit_code == 2 and "PNG or TIFF" in result.stderr and not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="1-bit"):
        write_page(tmp_path / "x.jpg", text_page(), binary=True)


def test_dibco_scores_by_hand():
    truth = np.full((20, 20), 255, np.uint8)
    truth[5:15, 5:7] = 0  # 20 ink pixels
    assert dibco_scores(truth, truth)[0] == pytest.approx(100)
    half = truth.copy()
    half[10:15, 5:7] = 255  # 10 of them found, none wrong: precision 1, recall 0.5
    assert dibco_scores(half, truth)[0] == pytest.approx(100 * 2 * 0.5 / 1.5)


def test_evaluate_binary_reports_the_dibco_figures_beside_the_classic_binarisers(tmp_path, tiny_model_path):
    truth = text_page(ink=0, paper=255)
    rng = np.random.default_rng(0)
    stain = cv2.GaussianBlur(rng.normal(0, 40, truth.shape), (0, 0), 12)
    dirty = np.clip(np.where(truth == 0, 70, 215) + stain + rng.normal(0, 6, truth.shape), 0, 255).astype(np.uint8)
    write_image(tmp_path / "dirty" / "p.png", dirty)
    write_image(tmp_path / "gt" / "p.png", truth)
    result = cli("evaluate", "--dirty", tmp_path / "dirty", "--clean", tmp_path / "gt", "--model", tiny_model_path,
                 "--binary", "--json", tmp_path / "r.json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for method in ("do nothing", "Otsu", "Sauvola", "cleandoc"):
        assert method in result.stdout
    figures = json.loads((tmp_path / "r.json").read_text())
    assert figures["pages"] == 1 and set(figures["mean"]) == {"do nothing", "Otsu", "Sauvola", "cleandoc"}
    otsu = figures["mean"]["Otsu"]
    assert 50 < otsu["fm"] <= 100 and otsu["psnr"] > 5 and otsu["drd"] >= 0
