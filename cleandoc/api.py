"""The front door: `Cleaner.load(...)` once, then `.clean(page)`, `.clean_file(src, dst)` or `.clean_files(jobs)`.

Everything that cleans comes in here: the command line, `evaluate`, training's validation, the benchmarks and
any integration. The device, the precision and the tiles are decided here, once, and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .clean import PageResult, Summary, clean_document, clean_pages
from .files import Job
from .imageio import PageError, as_uint8, to_gray
from .metrics import binarize as binary_page
from .models import Denoiser
from .options import CleanOptions, RunOptions
from .runtime import autocast_dtype, pick_device, release_freed_memory, set_threads
from .store import ModelInfo, load_model
from .tiling import default_batch, plan_tile, run


class Cleaner:
    """A model ready to clean pages: on its device, in its precision, with its tiling.

    `Cleaner.load` reads a model file (or a shipped model by name); the constructor wraps a model already in
    memory (training validates with one).
    """

    def __init__(self, model: Denoiser, info: ModelInfo | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, tile: int = RunOptions.tile,
                 batch_size: int = RunOptions.batch_size):
        self.model, self.info = model, info
        self.device, self.dtype = torch.device(device), dtype
        self.tile, self.batch_size = tile, batch_size or default_batch(self.device)

    @classmethod
    def load(cls, model: str | os.PathLike = "default", device: str = RunOptions.device,
             precision: str = RunOptions.precision, threads: int | None = RunOptions.threads,
             tile: int = RunOptions.tile, batch_size: int = RunOptions.batch_size) -> Cleaner:
        """The shipped model ("default") or a model file; `device` auto|cpu|cuda|cuda:N, `precision`
        auto|fp32|fp16|bf16, `threads` for the CPU (None: one per core). ValueError for a device, precision or
        thread count that cannot be, `store.ModelFileError` for a file that is not a usable model."""
        set_threads(threads)
        where = pick_device(device)
        dtype = autocast_dtype(precision, where)
        net, info = load_model(model, where)
        return cls(net, info, where, dtype, tile, batch_size)

    def run(self, page: np.ndarray, out_dtype: type = np.uint8, out: np.ndarray | None = None,
            on_batch: Callable[[int, int], None] | None = None, binary: bool = False) -> np.ndarray:
        """The cleaned 2-D page (gray samples: uint8, uint16 or float in [0, 1]) as `out_dtype` (uint8 or float32),
        possibly into `out` (which may be `page` itself); with `binary`, in the model's binary style if it has one
        (the page to threshold for a 1-bit output). On a GPU that runs out of memory the tiles are halved
        and the page is tried again, as long as nothing of it has been written yet."""
        tile = (self.tile, self.tile) if self.tile else plan_tile(
            self.model, self.device, page.shape, self.batch_size,
            page.nbytes + (0 if out is page else page.size * np.dtype(out_dtype).itemsize), self.dtype)
        batches_done = 0

        def after_batch(done: int, total: int) -> None:
            nonlocal batches_done
            batches_done = done
            if self.device.type == "cpu":
                release_freed_memory()
            if on_batch:
                on_batch(done, total)

        while True:
            try:
                return run(self.model, page, tile, self.batch_size, self.device, self.dtype, out_dtype, out,
                           after_batch, binary)
            except torch.cuda.OutOfMemoryError:
                smallest = self.model.size_multiple
                if (out is page and batches_done) or max(tile) <= smallest:
                    raise
                torch.cuda.empty_cache()
                tile = (max(smallest, tile[0] // 2), max(smallest, tile[1] // 2))

    def clean(self, page: np.ndarray, binarize: bool = False) -> np.ndarray:
        """A cleaned copy of a page given as a NumPy array: uint8, uint16 or float in [0, 1]; gray (H×W), RGB
        (H×W×3) or RGBA (H×W×4, transparent areas count as paper), in RGB order as Pillow gives it. Returns the
        gray H×W page as uint8 for uint8, uint16 for uint16 and float32 in [0, 1] for floats; with `binarize`,
        pure black and white (0 and the type's white) as `cleandoc clean --binarize` writes it."""
        gray = to_gray(page, order="rgb")
        if binarize:
            black_white = binary_page(self.run(as_uint8(gray), binary=True))
            if page.dtype == np.uint8:
                return black_white
            cleaned = black_white / np.float32(255)  # 0.0 and 1.0
        elif page.dtype == np.uint8:
            return self.run(as_uint8(gray))
        else:
            cleaned = self.run(gray, out_dtype=np.float32)
        if page.dtype == np.uint16:
            return np.rint(cleaned * 65535).astype(np.uint16)
        return cleaned

    def clean_files(self, jobs: list[Job], options: CleanOptions = CleanOptions(),
                    on_page: Callable[[PageResult], None] | None = None) -> Summary:
        """Clean every job (input file → output file) as `cleandoc clean` does: pages decoded and encoded on
        worker threads while the model runs, written atomically, a bad page reported and the rest cleaned."""
        return clean_pages(jobs, self, options, on_page)

    def clean_document(self, src: str | os.PathLike, dst: str | os.PathLike, binarize: bool = False,
                       dpi: float | None = None, jpeg_quality: int | None = None) -> list[str]:
        """Clean a PDF or multi-page TIFF into `dst`, a document of the same kind (same pages, sizes and resolution),
        replacing it; as `clean_file` otherwise. `dpi` renders pages that are not one scanned image at that
        resolution; `jpeg_quality` writes PDF pages as JPEG instead of losslessly."""
        options = CleanOptions(overwrite=True, binarize=binarize, dpi=dpi, jpeg_quality=jpeg_quality)
        return _warnings_or_raise(clean_document(Job(Path(src), Path(dst), "document"), self, options))

    def clean_file(self, src: str | os.PathLike, dst: str | os.PathLike, binarize: bool = False) -> list[str]:
        """Clean one image file into `dst` (its format from the extension; 1-bit with `binarize`), replacing it.
        Returns the page's warnings (e.g. one that may have lost its text); raises PageError naming the file
        when it cannot be read or written."""
        [result] = self.clean_files([Job(Path(src), Path(dst))], CleanOptions(overwrite=True, binarize=binarize,
                                                                             workers=1)).results
        return _warnings_or_raise(result)


def _warnings_or_raise(result: PageResult) -> list[str]:
    """What one file's cleaning gives a caller in Python: its warnings, or a PageError naming the file."""
    if result.status == "failed":
        raise PageError(f"{result.job.source}: {result.reason}")
    return result.warnings
