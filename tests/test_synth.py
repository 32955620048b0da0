"""Synthetic pages: deterministic, true to the dpi, mostly paper with real text, and written as exact pairs."""

from __future__ import annotations

import cv2
import numpy as np

from cleandoc import synth
from cleandoc.imageio import read_page
from cleandoc.synth import render_page, synth_pages


def _page(seed: int, dpi: int = 100) -> np.ndarray:
    return render_page(np.random.default_rng(seed), dpi)


def _glyph_height(page: np.ndarray) -> float:
    """Median height of the ink blobs: about the x-height, so it follows the text size."""
    _, _, stats, _ = cv2.connectedComponentsWithStats((page < 0.5).astype(np.uint8), connectivity=8)
    return float(np.median(stats[1:, cv2.CC_STAT_HEIGHT]))


def _speckle(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(page + rng.normal(0, 0.1, page.shape), 0, 1).astype(np.float32)


def test_page_is_deterministic_sized_for_the_dpi_and_mostly_paper():
    page = _page(3)
    assert np.array_equal(page, _page(3))
    assert not np.array_equal(page, _page(4))
    assert page.dtype == np.float32 and page.shape == (1169, 827)  # A4 at 100 dpi
    assert page.min() >= 0 and page.max() <= 1
    assert (page < 0.5).any()
    assert (page > 0.9).mean() > 0.8
    assert render_page(np.random.default_rng(0), 50, (100, 80)).shape == (157, 197)


def test_text_size_follows_the_dpi():
    for seed in range(3):
        ratio = _glyph_height(_page(seed, 200)) / _glyph_height(_page(seed, 100))
        assert 1.4 < ratio < 2.6, (seed, ratio)


def test_pages_vary_in_ink_and_layout():
    pages = [_page(seed, 50) for seed in range(8)]
    darkest = [p.min() for p in pages]
    assert max(darkest) - min(darkest) > 0.03  # the ink level changes from page to page
    assert len({(p < 0.5).sum() for p in pages}) == len(pages)


def test_pillow_default_font_is_the_fallback(monkeypatch):
    monkeypatch.setattr(synth, "typefaces", lambda: [("sans", {"regular": ""})])
    page = _page(1, 50)
    assert (page < 0.5).any() and (page > 0.9).mean() > 0.8


def test_synth_pages_writes_exact_stable_pairs(tmp_path):
    calls = []
    pairs = synth_pages(tmp_path / "a", 3, dpi=50, seed=7, corrupt=_speckle, on_page=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert [(d.name, c.name) for d, c in pairs] == [(f"page-000{i}.png",) * 2 for i in (1, 2, 3)]
    assert sorted(p.name for p in (tmp_path / "a" / "dirty").iterdir()) == [d.name for d, _ in pairs]
    assert sorted(p.name for p in (tmp_path / "a" / "clean").iterdir()) == [c.name for _, c in pairs]
    for index, (dirty_path, clean_path) in enumerate(pairs):
        dirty, clean = read_page(dirty_path), read_page(clean_path)
        assert dirty.shape == clean.shape
        expected = render_page(np.random.default_rng([7, index]), 50)
        assert np.abs(clean - expected).max() <= 1 / 255  # the clean page is the exact target
        assert np.abs(dirty - clean).mean() > 0.02

    shorter = synth_pages(tmp_path / "b", 2, dpi=50, seed=7, corrupt=_speckle)
    for (dirty_a, clean_a), (dirty_b, clean_b) in zip(pairs, shorter):
        assert dirty_a.read_bytes() == dirty_b.read_bytes() and clean_a.read_bytes() == clean_b.read_bytes()

    again = synth_pages(tmp_path / "a", 3, dpi=50, seed=7, corrupt=_speckle)
    assert again == pairs
    assert sorted(p.name for p in (tmp_path / "a" / "dirty").iterdir()) == [d.name for d, _ in pairs]


def test_default_corruption_comes_from_the_noise_module(tmp_path):
    ((dirty_path, clean_path),) = synth_pages(tmp_path, 1, dpi=50)
    dirty, clean = read_page(dirty_path), read_page(clean_path)
    assert dirty.shape == clean.shape and not np.array_equal(dirty, clean)


def test_synth_figure_pages_are_the_figures_page(tmp_path):
    ((_, clean_path),) = synth_pages(tmp_path, 1, dpi=50, seed=5, corrupt=_speckle, figures=True)
    expected, _ = synth.render_figures(np.random.default_rng([5, 0]), 50)
    assert expected.shape == (413, 291)  # A5 at 50 dpi
    assert np.abs(read_page(clean_path) - expected).max() <= 1 / 255
