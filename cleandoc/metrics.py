"""Image quality figures for pages in [0, 1]: RMSE (the Kaggle metric when pooled), PSNR and SSIM."""

from __future__ import annotations

import math

import cv2
import numpy as np


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
