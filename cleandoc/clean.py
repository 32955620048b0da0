"""Clean a list of pages: read, run the model tiled, write atomically; one bad page never stops the run.

Kept apart from `files.py` (which only decides what goes where) so that Python callers can clean their own
job list with the same skip, failure and progress rules as the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .files import Job
from .imageio import (
    DEFAULT_MAX_PIXELS,
    PageError,
    read_gray,
    remove_stale_temporaries,
    write_page,
)
from .tiling import run


@dataclass
class CleanOptions:
    tile: int = 0  # 0: pick for the device
    batch_size: int = 4
    dtype: torch.dtype | None = None  # autocast precision; None for float32
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class PageResult:
    job: Job
    status: str  # "cleaned", "skipped" or "failed"
    reason: str = ""
    megapixels: float = 0.0
    seconds: float = 0.0


@dataclass
class Summary:
    results: list[PageResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def megapixels(self) -> float:
        return sum(r.megapixels for r in self.results if r.status == "cleaned")


def clean_page(job: Job, model: torch.nn.Module, options: CleanOptions, device: torch.device) -> PageResult:
    """Clean one page; expected failures come back as a "failed" result with a one-line reason."""
    started = time.perf_counter()
    if job.output.exists() and not options.overwrite:
        return PageResult(job, "skipped", "output exists (use --overwrite to replace it)")
    try:
        page = read_gray(job.source, options.max_pixels)
        megapixels = page.size / 1e6
        cleaned = run(model, page, tile=options.tile, batch_size=options.batch_size, device=device,
                      dtype=options.dtype, out_dtype=np.uint8)
        del page  # a huge scan's input is not needed while its output is encoded: peak memory drops by its size
        job.output.parent.mkdir(parents=True, exist_ok=True)
        write_page(job.output, cleaned)
    except PageError as exc:
        return PageResult(job, "failed", str(exc))
    except OSError as exc:  # e.g. the output folder cannot be created
        return PageResult(job, "failed", f"cannot write output: {exc.strerror or exc}")
    except torch.cuda.OutOfMemoryError:
        return PageResult(job, "failed", "out of GPU memory (try a smaller --tile or --batch-size)")
    return PageResult(job, "cleaned", megapixels=megapixels, seconds=time.perf_counter() - started)


def clean_pages(jobs: list[Job], model: torch.nn.Module, options: CleanOptions, device: torch.device,
                on_page: Callable[[PageResult], None] | None = None) -> Summary:
    """Clean every job in order. Ctrl-C stops after the current page and returns the summary so far."""
    summary = Summary()
    started = time.perf_counter()
    for folder in sorted({job.output.parent for job in jobs}):
        if folder.is_dir():
            remove_stale_temporaries(folder)
    try:
        for job in jobs:
            result = clean_page(job, model, options, device)
            summary.results.append(result)
            if on_page:
                on_page(result)
    except KeyboardInterrupt:
        summary.interrupted = True
    summary.seconds = time.perf_counter() - started
    return summary
