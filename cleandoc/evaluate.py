"""Score a model on (dirty, clean) pairs against the do-nothing baseline, and draw its worst pages.

Scores are taken on the 8-bit pages `cleandoc clean` writes, so a figure is what a user gets."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .data import Pair, is_binary, load_pairs
from .imageio import as_uint8, to_unit_float, write_atomically
from .metrics import (
    CLASSIC_BINARISERS,
    binarize,
    classic_binary,
    dibco_scores,
    psnr,
    rmse,
    squared_error,
    ssim,
)

if TYPE_CHECKING:
    from .api import Cleaner


@dataclass
class PageScore:
    name: str
    pixels: int
    rmse: float
    psnr: float
    ssim: float
    input_rmse: float  # the do-nothing baseline: dirty page vs clean page
    input_psnr: float
    input_ssim: float


@dataclass
class Report:
    pages: list[PageScore] = field(default_factory=list)

    def _pooled(self, name: str) -> float:
        """RMSE over every pixel of every page (the Kaggle metric), from the per-page figures."""
        return math.sqrt(sum(getattr(p, name) ** 2 * p.pixels for p in self.pages) / sum(p.pixels for p in self.pages))

    @property
    def rmse(self) -> float:
        return self._pooled("rmse")

    @property
    def input_rmse(self) -> float:
        return self._pooled("input_rmse")

    def mean(self, name: str) -> float:
        return float(np.mean([getattr(p, name) for p in self.pages]))

    def to_dict(self) -> dict:
        return {"pages": len(self.pages), "rmse": self.rmse, "input_rmse": self.input_rmse,
                "psnr": self.mean("psnr"), "input_psnr": self.mean("input_psnr"),
                "ssim": self.mean("ssim"), "input_ssim": self.mean("input_ssim"),
                "per_page": [asdict(p) for p in self.pages]}


def cleaned_as_written(cleaner: Cleaner, dirty: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """The 8-bit page `cleandoc clean` writes for `dirty`, as floats in [0, 1]: what every score compares. For a
    target that is an ink mask, the page `clean --binarize` thresholds (the model's binary style, if it has one)."""
    return to_unit_float(cleaner.run(to_unit_float(dirty), binary=is_binary(clean)))


def score_pages(pages: Iterable[tuple[str, np.ndarray, np.ndarray]], cleaner: Cleaner, *, worst: int = 0,
                on_page: Callable[[PageScore], None] | None = None) -> tuple[Report, list]:
    """Clean every (name, dirty, clean) page as `cleandoc clean` does, to the 8-bit page it would write, and
    compare with its target: the one scoring that `evaluate`, training's validation and the benchmarks share.
    Also returns the `worst` pages by RMSE as (score, dirty, cleaned, clean) tuples, for a contact sheet."""
    cleaner.model.eval()
    report = Report()
    kept: list = []  # a min-heap on RMSE holding the worst pages seen so far
    for index, (name, dirty, clean) in enumerate(pages):
        dirty, clean = to_unit_float(dirty), to_unit_float(clean)
        cleaned = cleaned_as_written(cleaner, dirty, clean)
        score = PageScore(name, clean.size, rmse(cleaned, clean), psnr(cleaned, clean), ssim(cleaned, clean),
                          rmse(dirty, clean), psnr(dirty, clean), ssim(dirty, clean))
        report.pages.append(score)
        if worst:
            item = (score.rmse, index, (score, dirty, cleaned, clean))
            (heapq.heappush if len(kept) < worst else heapq.heappushpop)(kept, item)
        if on_page:
            on_page(score)
    return report, [entry for _, _, entry in sorted(kept, reverse=True)]


def evaluate(pairs: list[Pair], cleaner: Cleaner, **options) -> tuple[Report, list]:
    """`score_pages` on pairs of files, read one pair at a time."""
    return score_pages(((pair.name, *load_pairs([pair])[0]) for pair in pairs), cleaner, **options)


BINARY_METHODS = ("do nothing", *CLASSIC_BINARISERS, "cleandoc")


@dataclass
class BinaryScore:
    """One page's DIBCO figures, (F-measure %, PSNR dB, DRD), for each of BINARY_METHODS: the input thresholded
    at half (doing nothing), the classic binarisers on the input, and cleandoc's binarised output."""

    name: str
    scores: dict[str, tuple[float, float, float]]


@dataclass
class BinaryReport:
    pages: list[BinaryScore] = field(default_factory=list)

    def mean(self, method: str) -> tuple[float, float, float]:
        """The mean of each figure over the pages, as the DIBCO contests report them."""
        return tuple(float(np.mean([p.scores[method][i] for p in self.pages])) for i in range(3))

    def to_dict(self) -> dict:
        return {"pages": len(self.pages),
                "mean": {m: dict(zip(("fm", "psnr", "drd"), self.mean(m))) for m in BINARY_METHODS},
                "per_page": [asdict(p) for p in self.pages]}


def score_binary(pages: Iterable[tuple[str, np.ndarray, np.ndarray]], cleaner: Cleaner,
                 on_page: Callable[[BinaryScore], None] | None = None) -> BinaryReport:
    """Binarise every (name, dirty, ground truth) page with cleandoc (`clean --binarize`) and with the classic
    binarisers, and score each against the ground truth (thresholded at half, so grey targets work too)."""
    cleaner.model.eval()
    report = BinaryReport()
    for name, dirty, truth in pages:
        dirty = as_uint8(dirty)
        cleaned = cleaner.run(dirty, binary=True)
        binaries = {"do nothing": binarize(dirty), **{m: classic_binary(dirty, m) for m in CLASSIC_BINARISERS},
                    "cleandoc": binarize(cleaned)}
        score = BinaryScore(name, {method: dibco_scores(binary, truth) for method, binary in binaries.items()})
        report.pages.append(score)
        if on_page:
            on_page(score)
    return report


def evaluate_binary(pairs: list[Pair], cleaner: Cleaner, **options) -> BinaryReport:
    """`score_binary` on pairs of files, read one pair at a time."""
    return score_binary(((pair.name, *load_pairs([pair])[0]) for pair in pairs), cleaner, **options)


def pooled_rmse(cleaner: Cleaner, pages: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Pooled RMSE on in-memory (dirty, clean) pages, scored as `score_pages` scores: what training validates with
    after every epoch, so without the PSNR, SSIM and do-nothing figures it has no use for."""
    cleaner.model.eval()
    squared = sum(squared_error(cleaned_as_written(cleaner, dirty, clean), to_unit_float(clean))
                  for dirty, clean in pages)
    return math.sqrt(squared / sum(clean.size for _, clean in pages))


def contact_sheet(rows: list, path, height: int = 360) -> None:
    """Write a PNG: one row per page, dirty | cleaned | target | error map (|cleaned - target|, ×4)."""
    if not rows:
        raise ValueError("no pages to draw")
    lines = []
    for score, dirty, cleaned, clean in rows:
        width = max(1, round(dirty.shape[1] * height / dirty.shape[0]))
        panels = [cv2.cvtColor(_to_uint8(p, width, height), cv2.COLOR_GRAY2BGR) for p in (dirty, cleaned, clean)]
        error = _to_uint8(np.clip(np.abs(cleaned - clean) * 4, 0, 1), width, height)
        panels.append(cv2.applyColorMap(error, cv2.COLORMAP_INFERNO))
        titles = [f"{score.name} dirty (RMSE {score.input_rmse:.4f})", f"cleaned (RMSE {score.rmse:.4f})",
                  "target", "error x4"]
        for panel, title in zip(panels, titles):
            cv2.rectangle(panel, (0, 0), (panel.shape[1], 22), (255, 255, 255), -1)
            cv2.putText(panel, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 160), 1, cv2.LINE_AA)
        lines.append(cv2.hconcat([cv2.copyMakeBorder(p, 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=(128, 128, 128))
                                  for p in panels]))
    sheet_width = max(line.shape[1] for line in lines)
    lines = [cv2.copyMakeBorder(line, 0, 0, 0, sheet_width - line.shape[1], cv2.BORDER_CONSTANT,
                                value=(255, 255, 255)) for line in lines]
    ok, encoded = cv2.imencode(".png", cv2.vconcat(lines))
    if not ok:
        raise ValueError("could not encode the contact sheet")
    write_atomically(path, encoded.tobytes())


def _to_uint8(page: np.ndarray, width: int, height: int) -> np.ndarray:
    resized = cv2.resize(page.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(resized * 255), 0, 255).astype(np.uint8)
