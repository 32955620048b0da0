"""Synthetic corruptions keep their contract (seeded, pure, in range, identity at strength 0) and each changes
a page by about its strength; the noise bank moves a real background onto another page."""

from __future__ import annotations

import numpy as np
import pytest

from cleandoc import noise
from cleandoc.noise import (
    CORRUPTIONS,
    DEFAULT_STRENGTH,
    NoiseBank,
    corrupt,
    parse_recipe,
    random_recipe,
)

NAMES = sorted(CORRUPTIONS)
USES_NO_RANDOMNESS = {"blur", "jpeg"}
# Each hit pixel of these changes by about 1, so their RMS change is about sqrt(strength), not strength.
PER_PIXEL_PROBABILITY = {"mask", "saltpepper"}


def bars_page(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """White paper with black text-like bars at positions and sizes off the 8×8 JPEG grid."""
    rng = np.random.default_rng(seed)
    page = np.ones((height, width), np.float32)
    for _ in range(12):
        y, x = rng.integers(2, height - 8), rng.integers(2, width - 30)
        page[y:y + rng.integers(2, 6), x:x + rng.integers(5, 28)] = 0.0
    return page


def rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


def mean_rms_change(name: str, page: np.ndarray, strength: float, seeds=range(4)) -> float:
    return float(np.mean([rms(CORRUPTIONS[name](page, strength, np.random.default_rng(s)), page) for s in seeds]))


@pytest.mark.parametrize("name", NAMES)
def test_contract(name: str):
    page = bars_page()
    page[40:60, :] *= 0.6  # some grey, so every corruption has something to change either way
    before = page.copy()
    strength = DEFAULT_STRENGTH[name]
    out = CORRUPTIONS[name](page, strength, np.random.default_rng(7))
    again = CORRUPTIONS[name](page, strength, np.random.default_rng(7))
    assert np.array_equal(page, before), "the input page was modified"
    assert out is not page and out.shape == page.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert np.array_equal(out, again)
    if name not in USES_NO_RANDOMNESS:
        assert not np.array_equal(out, CORRUPTIONS[name](page, strength, np.random.default_rng(8)))


@pytest.mark.parametrize("name", NAMES)
def test_strength_zero_gives_the_page_back(name: str):
    page = bars_page()
    page[40:60, :] *= 0.6
    out = CORRUPTIONS[name](page, 0.0, np.random.default_rng(3))
    if name == "jpeg":  # quality 95 is not lossless
        assert rms(out, page) < 0.02
    else:
        assert np.array_equal(out, page)


@pytest.mark.parametrize("name", NAMES)
def test_change_grows_with_strength(name: str):
    page = bars_page()
    strengths = [0.1, 0.3, 0.6]
    changes = [mean_rms_change(name, page, s) for s in strengths]
    assert 0 < changes[0] < changes[1] < changes[2], changes
    if name not in PER_PIXEL_PROBABILITY:
        for s, change in zip(strengths, changes):
            assert change <= 1.5 * s + 0.05, (s, change)


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.15])
def test_gaussian_std_is_strength(sigma: float):
    page = np.full((128, 128), 0.5, np.float32)  # mid-grey: clipping is negligible
    out = noise.gaussian(page, sigma, np.random.default_rng(0))
    assert (out - page).std() == pytest.approx(sigma, rel=0.15)


@pytest.mark.parametrize("q", [0.1, 0.25, 0.5])
def test_mask_fraction_is_strength(q: float):
    page = np.ones((128, 128), np.float32)
    out = noise.mask(page, q, np.random.default_rng(0))
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert np.mean(out == 0) == pytest.approx(q, abs=0.02)


@pytest.mark.parametrize("p", [0.02, 0.1, 0.3])
def test_saltpepper_fraction_is_strength(p: float):
    page = np.full((128, 128), 0.5, np.float32)
    out = noise.saltpepper(page, p, np.random.default_rng(0))
    changed = out != page
    assert changed.mean() == pytest.approx(p, abs=0.02)
    assert np.mean(out[changed] == 0) == pytest.approx(0.5, abs=0.1)


def edge_width(profile: np.ndarray) -> float:
    """10-90% rise distance of a monotone edge profile, in pixels."""
    xs = np.arange(profile.size, dtype=np.float64)
    return float(np.interp(0.9, profile, xs) - np.interp(0.1, profile, xs))


def test_blur_edge_width_grows_with_sigma():
    page = np.zeros((16, 64), np.float32)
    page[:, 32:] = 1.0
    widths = [edge_width(noise.blur(page, s, np.random.default_rng(0))[8]) for s in (0.5, 1.0, 2.0, 4.0)]
    assert widths == sorted(widths) and len(set(widths)) == 4, widths
    for sigma, width in zip((1.0, 2.0, 4.0), widths[1:]):  # 2.56 sigma for a continuous Gaussian
        assert width == pytest.approx(2.563 * sigma, rel=0.25)


def test_jpeg_quality_range_is_clipped():
    page = bars_page()
    rng = np.random.default_rng(0)
    assert np.array_equal(noise.jpeg(page, 1.0, rng), noise.jpeg(page, 5.0, rng))


def test_parse_recipe():
    assert parse_recipe(["gaussian:0.1", "mask:0.25", "blur"]) == [
        ("gaussian", 0.1), ("mask", 0.25), ("blur", DEFAULT_STRENGTH["blur"])]
    assert parse_recipe([]) == []
    assert set(DEFAULT_STRENGTH) == set(CORRUPTIONS)


@pytest.mark.parametrize("spec", ["gausian:0.1", "blur:abc", "blur:", "jpeg:-0.1", "ink:nan", ":0.2"])
def test_parse_recipe_rejects_bad_specs(spec: str):
    with pytest.raises(ValueError) as info:
        parse_recipe(["blur", spec])
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in CORRUPTIONS)


def test_corrupt_applies_in_order():
    page = bars_page()
    recipe = [("stains", 0.3), ("blur", 1.5), ("gaussian", 0.05), ("jpeg", 0.4)]
    rng = np.random.default_rng(5)
    manual = page
    for name, strength in recipe:
        manual = CORRUPTIONS[name](manual, strength, rng)
    out = corrupt(page, recipe, np.random.default_rng(5))
    assert np.array_equal(out, manual)
    assert not np.array_equal(out, corrupt(page, recipe[::-1], np.random.default_rng(5)))
    with pytest.raises(ValueError, match="known: "):
        corrupt(page, [("nope", 1.0)], rng)


def test_corrupt_with_no_recipe_copies():
    page = bars_page()
    out = corrupt(page, [], np.random.default_rng(0))
    assert out is not page and np.array_equal(out, page)


def test_random_recipe():
    recipes = [random_recipe(np.random.default_rng(seed)) for seed in range(40)]
    assert recipes[3] == random_recipe(np.random.default_rng(3))
    assert len({tuple(r) for r in recipes}) > 30
    for recipe in recipes:
        names = [name for name, _ in recipe]
        assert 2 <= len(recipe) <= 5
        assert names == sorted(names, key=noise.DOCUMENT_ORDER.index)  # known names, in order, each once
        assert all(0 < s <= DEFAULT_STRENGTH[name] for name, s in recipe)
    scaled = random_recipe(np.random.default_rng(3), strength_scale=0.5)
    assert scaled == [(name, s * 0.5) for name, s in recipes[3]]  # same draws, halved (exactly, in binary)
    out = corrupt(bars_page(), recipes[0], np.random.default_rng(0))
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1


def stain_field(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth known stain in [0.5, 0.9]: a dark blotch and a gradient on greyish paper."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    blotch = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.25 * width) ** 2))
    return (0.9 - 0.3 * blotch - 0.1 * xx / width).astype(np.float32)


@pytest.fixture(scope="module")
def bank_pairs() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(dirty, clean, stain) triples."""
    triples = []
    for seed in (1, 2):
        clean = bars_page(120, 160, seed)
        field = stain_field(120, 160, seed)
        triples.append((clean * field, clean, field))
    return triples


def test_noise_bank_extracts_the_stain(bank_pairs):
    bank = NoiseBank.from_pairs([(dirty, clean) for dirty, clean, _ in bank_pairs])
    assert len(bank.layers) == 2
    for layer, (_, clean, field) in zip(bank.layers, bank_pairs):
        layer = layer.astype(np.float32) / 255
        assert layer.shape == clean.shape
        paper, ink = clean >= 0.9, clean < 0.9
        assert np.abs(layer - field)[paper].max() < 0.05
        assert layer[ink].min() > 0.3  # filled, no holes
        assert np.abs(layer - field)[ink].max() < 0.1


@pytest.mark.parametrize("shape", [(120, 160), (70, 50), (330, 420)])  # same, smaller, larger than every layer
def test_noise_bank_apply(bank_pairs, shape):
    bank = NoiseBank.from_pairs([(dirty, clean) for dirty, clean, _ in bank_pairs])
    clean = bars_page(*shape, seed=9)
    out = bank.apply(clean, np.random.default_rng(4))
    assert out.shape == clean.shape and out.dtype == np.float32
    assert np.array_equal(out, bank.apply(clean, np.random.default_rng(4)))
    assert out[clean == 0].max() < 0.2  # ink stays dark
    assert out[clean == 1].max() < 0.95 and out[clean == 1].min() > 0.45  # paper takes the stain


def test_noise_bank_rejects_bad_pairs():
    page = np.ones((8, 8), np.float32)
    with pytest.raises(ValueError, match="differ in size"):
        NoiseBank.from_pairs([(page, np.ones((8, 9), np.float32))])
    with pytest.raises(ValueError, match="no paper"):
        NoiseBank.from_pairs([(page, np.zeros((8, 8), np.float32))])
    with pytest.raises(ValueError):
        NoiseBank.from_pairs([])
