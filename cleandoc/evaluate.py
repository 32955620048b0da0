"""Score a model on (dirty, clean) pairs against the do-nothing baseline, and draw its worst pages."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np
import torch

from .data import Pair, load_pairs
from .imageio import write_atomically
from .metrics import psnr, rmse, ssim
from .tiling import run


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


def evaluate(pairs: list[Pair], model: torch.nn.Module, device: torch.device, *, tile: int = 0,
             batch_size: int = 0, dtype: torch.dtype | None = None, worst: int = 0,
             on_page: Callable[[PageScore], None] | None = None) -> tuple[Report, list]:
    """Clean every dirty page and compare with its target. Also returns the `worst` pages by RMSE as
    (score, dirty, cleaned, clean) tuples, for a contact sheet."""
    report = Report()
    kept: list = []  # a min-heap on RMSE holding the worst pages seen so far
    for index, pair in enumerate(pairs):
        dirty, clean = load_pairs([pair])[0]
        cleaned = run(model, dirty, tile=tile, batch_size=batch_size, device=device, dtype=dtype)
        score = PageScore(pair.name, clean.size, rmse(cleaned, clean), psnr(cleaned, clean), ssim(cleaned, clean),
                          rmse(dirty, clean), psnr(dirty, clean), ssim(dirty, clean))
        report.pages.append(score)
        if worst:
            item = (score.rmse, index, (score, dirty, cleaned, clean))
            (heapq.heappush if len(kept) < worst else heapq.heappushpop)(kept, item)
        if on_page:
            on_page(score)
    return report, [entry for _, _, entry in sorted(kept, reverse=True)]


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
