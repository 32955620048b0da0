"""Image quality figures for pages in [0, 1]: RMSE (the Kaggle metric when pooled), PSNR and SSIM; the DIBCO
binarisation figures (F-measure, PSNR, DRD, computed by doxapy); the share of ink a cleaned page kept."""

from __future__ import annotations

import math

import cv2
import doxapy
import numpy as np

from .imageio import to_uint8


def squared_error(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of squared differences, in float64: pooled RMSE is sqrt(sum over pages / pixel count)."""
    return float(np.square(a.astype(np.float64) - b.astype(np.float64)).sum())


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(squared_error(a, b) / a.size)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for a peak of 1; infinite for identical pages."""
    error = rmse(a, b)
    return math.inf if error == 0 else 20 * math.log10(1 / error)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity (Wang et al. 2004): 11×11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = 0.01 ** 2, 0.03 ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


def binarize(page: np.ndarray) -> np.ndarray:
    """A page as pure black and white (uint8 0 or 255): paper where it is at least half white, as `cleandoc
    clean --binarize` writes it."""
    samples = page if page.dtype == np.uint8 else to_uint8(page)
    return np.where(samples >= 128, np.uint8(255), np.uint8(0))


CLASSIC_BINARISERS = {"Otsu": doxapy.Binarization.Algorithms.OTSU, "Sauvola": doxapy.Binarization.Algorithms.SAUVOLA}


def classic_binary(page: np.ndarray, name: str) -> np.ndarray:
    """A classic binariser's result (doxapy, its default parameters) for an 8-bit gray page: the baselines a
    learned cleaner is measured against."""
    binary = np.empty_like(page)
    binariser = doxapy.Binarization(CLASSIC_BINARISERS[name])
    binariser.initialize(np.ascontiguousarray(page))
    binariser.to_binary(binary, {})
    return binary


def dibco_scores(binary: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(F-measure in %, PSNR in dB, DRD) of a binary page against binary ground truth, as the DIBCO contests
    compute them (doxapy's implementation)."""
    scores = doxapy.calculate_performance(binarize(truth), binarize(binary))
    return scores["fm"], scores["psnr"], scores["drdm"]


def ink_kept(cleaned: np.ndarray, ink: np.ndarray) -> float:
    """The share of the `ink` pixels (a boolean mask) that are still ink (darker than half) in the cleaned page;
    1 when there is no ink to keep."""
    count = int(ink.sum())
    if not count:
        return 1.0
    threshold = 128 if cleaned.dtype == np.uint8 else 0.5
    return float((cleaned[ink] < threshold).sum() / count)


# The erasure check looks at pages of at most this many pixels (bigger ones are shrunk for it), so that its masks
# stay small beside a huge page.
CHECK_PIXELS = 16_000_000


def check_scale(page: np.ndarray) -> np.ndarray:
    """The page as the erasure check sees it: itself, or shrunk (by area) to at most CHECK_PIXELS."""
    factor = math.sqrt(page.size / CHECK_PIXELS)
    if factor <= 1:
        return page
    size = (max(1, int(page.shape[1] / factor)), max(1, int(page.shape[0] / factor)))
    return cv2.resize(page, size, interpolation=cv2.INTER_AREA)


def dark_strokes(page: np.ndarray) -> np.ndarray:
    """The dark strokes a plain adaptive threshold finds in an 8-bit page (at `check_scale`): pixels at least
    STROKE_CONTRAST darker than the mean of their neighbourhood (relative to it, so faint ink on dark paper
    counts as much as black ink on white), after a light blur that keeps sensor noise from counting as strokes.
    It also finds some dirt; what matters is that it finds the text, faint text too."""
    small = cv2.GaussianBlur(check_scale(page).astype(np.float32), (0, 0), 1.0)
    mean = cv2.boxFilter(small, -1, (STROKE_WINDOW, STROKE_WINDOW), borderType=cv2.BORDER_REFLECT)
    return small < (1 - STROKE_CONTRAST) * mean


STROKE_WINDOW = 31  # px, the neighbourhood of `dark_strokes`
STROKE_CONTRAST = 0.1  # 10% darker than the neighbourhood: ink at contrast 0.25 is, after the blur


def strokes_kept(cleaned: np.ndarray, strokes: np.ndarray) -> float:
    """The share of the input's `dark_strokes` that the cleaned 8-bit page still has ink on or next to (within a
    pixel, so a stroke redrawn a little thinner counts as kept); 1 when the input had none."""
    count = int(strokes.sum())
    if not count:
        return 1.0
    ink = cv2.dilate((check_scale(cleaned) < 128).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return float(ink[strokes].sum() / count)
