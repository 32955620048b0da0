"""Clean a list of pages: read, run the model tiled, write atomically; one bad page never stops the run.

Pages flow through a pipeline: worker threads decode the next pages and encode the finished ones while the
model runs on the current one (OpenCV releases the GIL), so on a GPU the model does not wait for PNG codecs.
Kept apart from `files.py` (which only decides what goes where) so that Python callers can clean their own
job list with the same skip, failure and progress rules as the CLI.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from .documents import DocumentWriter, read_document
from .files import Job
from .imageio import (
    JPEG_QUALITY,
    PageError,
    as_uint8,
    read_image,
    remove_stale_temporaries,
    write_page,
)
from .metrics import dark_strokes, strokes_kept
from .options import CleanOptions
from .runtime import usable_cores

if TYPE_CHECKING:
    from .api import Cleaner

# Pages decoded ahead and cleaned pages waiting to be encoded hold at most this much memory together (one page
# may always be in flight, however large), so read-ahead never multiplies the footprint of huge scans.
PIPELINE_MEMORY = 512 * 2**20


# A cleaned page that keeps less than this share of the dark strokes a plain adaptive threshold finds in its
# input (`metrics.dark_strokes`) is written with a warning. Where a model cleans well (NoisyOffice scans, DIBCO
# pages) the share is 0.8 to 1; where a model erases faded text it is 0 to 0.5.
ERASURE_WARNING = 0.5


@dataclass
class PageResult:
    job: Job
    status: str  # "cleaned", "skipped" or "failed"
    reason: str = ""
    megapixels: float = 0.0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    pages: int = 1  # pages written (a document's)


@dataclass
class Summary:
    results: list[PageResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def warned(self) -> int:
        """Pages written with a warning (e.g. one that may have lost its text)."""
        return sum(bool(r.warnings) for r in self.results)

    @property
    def megapixels(self) -> float:
        return sum(r.megapixels for r in self.results if r.status == "cleaned")


def default_workers() -> int:
    """One decoding and encoding thread per core this process may use. The PNG codecs take a good part of a
    second of a core per A4 page (`bench/speed.py` prints the figure), so a GPU that cleans tens of pages a second
    keeps several cores busy with them and needs every core it can get; on a CPU the threads mostly wait for the
    model. The pipeline's memory budget, not the thread count, bounds the pages in flight."""
    return usable_cores()


@dataclass
class _Decoded:
    """A decoded page with what it is checked against (the page itself may be cleaned in place) and its dpi."""

    page: np.ndarray
    strokes: np.ndarray
    dpi: tuple[float, float] | None


def _strokes(page: np.ndarray) -> np.ndarray:
    return dark_strokes(as_uint8(page))


def _read(job: Job, max_pixels: int) -> _Decoded | PageResult:
    try:
        page, dpi = read_image(job.source, max_pixels)
    except PageError as exc:
        return PageResult(job, "failed", str(exc))
    return _Decoded(page, _strokes(page), dpi)


def _decoded_bytes(read: Future | None, estimate: int) -> int:
    """Bytes a queued job holds: a page's decode (estimated until it is done), nothing for a document, which
    streams its own pages when its turn comes."""
    if read is None:
        return 0
    if not read.done():
        return estimate
    decoded = read.result()
    return decoded.page.nbytes if isinstance(decoded, _Decoded) else 0


def erasure_warning(cleaned: np.ndarray, strokes: np.ndarray) -> str | None:
    """A warning when the cleaned page has lost most of the input's dark strokes (see ERASURE_WARNING)."""
    kept = strokes_kept(cleaned, strokes)
    if kept >= ERASURE_WARNING:
        return None
    return (f"the cleaned page keeps only {kept:.0%} of the dark strokes in the input: the model may have erased "
            "text or drawings; check the page")


def _write(job: Job, cleaned: np.ndarray, decoded: _Decoded, options: CleanOptions, begun: float) -> PageResult:
    warning = erasure_warning(cleaned, decoded.strokes)
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        write_page(job.output, cleaned, binary=options.binarize, dpi=decoded.dpi,
                   jpeg_quality=options.jpeg_quality or JPEG_QUALITY)
    except PageError as exc:
        return PageResult(job, "failed", str(exc))
    except OSError as exc:  # e.g. the output folder cannot be created
        return PageResult(job, "failed", f"cannot write output: {exc.strerror or exc}")
    return PageResult(job, "cleaned", megapixels=cleaned.size / 1e6, seconds=time.perf_counter() - begun,
                      warnings=[warning] if warning else [])


def _clean(page: np.ndarray, job: Job, cleaner: Cleaner, binarize: bool) -> np.ndarray | PageResult:
    """The cleaned page (in the model's binary style for a 1-bit output), written over the decoded one when both
    are 8-bit (a huge scan then needs one buffer)."""
    try:
        return cleaner.run(page, out_dtype=np.uint8, out=page if page.dtype == np.uint8 else None, binary=binarize)
    except torch.cuda.OutOfMemoryError:
        return PageResult(job, "failed", "out of GPU memory even with smaller tiles (try --tile or --batch-size)")


def clean_document(job: Job, cleaner: Cleaner, options: CleanOptions) -> PageResult:
    """Clean a PDF or multi-page TIFF page by page, one page in memory at a time, into a document of the same
    kind written atomically, or (a "split" job) into one image per page, each written atomically and skipped on a
    rerun when it exists. Page warnings name their page."""
    begun = time.perf_counter()
    warnings, pages, megapixels = [], 0, 0.0
    writer = None
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        if job.kind == "document":
            writer = DocumentWriter(job.output, options.binarize, options.jpeg_quality)
        for number, page in enumerate(read_document(job.source, options.dpi, options.max_pixels), start=1):
            target = job.page_output(number, options.page_extension) if job.kind == "split" else None
            if target is not None and target.exists() and not options.overwrite:
                continue
            strokes = _strokes(page.pixels)
            cleaned = _clean(page.pixels, job, cleaner, options.binarize)
            if isinstance(cleaned, PageResult):
                raise PageError(f"page {number}: {cleaned.reason}")
            if warning := erasure_warning(cleaned, strokes):
                warnings.append(f"page {number}: {warning}")
            if writer:
                writer.add(cleaned, page)
            else:
                write_page(target, cleaned, binary=options.binarize, dpi=page.dpi,
                           jpeg_quality=options.jpeg_quality or JPEG_QUALITY)
            pages += 1
            megapixels += cleaned.size / 1e6
        if writer:
            writer.finish()
    except PageError as exc:
        return PageResult(job, "failed", str(exc))
    except OSError as exc:
        return PageResult(job, "failed", f"cannot write output: {exc.strerror or exc}")
    finally:
        if writer:
            writer.abort()
    return PageResult(job, "cleaned", megapixels=megapixels, seconds=time.perf_counter() - begun,
                      warnings=warnings, pages=pages)


def clean_pages(jobs: list[Job], cleaner: Cleaner, options: CleanOptions,
                on_page: Callable[[PageResult], None] | None = None) -> Summary:
    """Clean every job with `cleaner` (`Cleaner.clean_files` is the way in); results are reported in job order.
    Ctrl-C stops reading new pages, lets the pages already cleaned finish writing, and returns the summary so
    far."""
    summary = Summary()
    started = time.perf_counter()
    for folder in sorted({job.output.parent for job in jobs}):
        if folder.is_dir():
            remove_stale_temporaries(folder)
    workers = options.workers or default_workers()
    waiting = deque(enumerate(jobs))
    reading: deque[tuple[int, Job, Future | None, float]] = deque()  # in job order: (index, job, decode, begun)
    writing: list[tuple[Future, int]] = []  # (encode, bytes held); finished ones pruned by start_reads
    outcomes: dict[int, PageResult | Future] = {}
    reported = 0
    largest = 0  # bytes of the largest decoded page so far: the estimate for pages still decoding

    def held() -> int:
        """Bytes held by pages decoded or decoding (estimated until known) and by those being encoded."""
        decoding = sum(_decoded_bytes(read, largest) for _, _, read, _ in reading)
        return decoding + sum(size for write, size in writing if not write.done())

    def start_reads() -> None:
        writing[:] = [(write, size) for write, size in writing if not write.done()]
        while waiting and len(reading) < workers:
            if (reading or writing) and (not largest or held() + largest > PIPELINE_MEMORY):
                return
            index, job = waiting.popleft()
            if job.kind != "split" and job.output.exists() and not options.overwrite:
                outcomes[index] = PageResult(job, "skipped", "output exists (use --overwrite to replace it)")
            elif job.kind == "page":
                reading.append((index, job, pool.submit(_read, job, options.max_pixels), time.perf_counter()))
            else:  # a document streams its pages through the model itself, in this thread
                reading.append((index, job, None, time.perf_counter()))

    def report(all_done: bool = False) -> None:
        nonlocal reported
        for index in range(reported, len(jobs)):
            outcome = outcomes.get(index)
            if isinstance(outcome, Future) and (all_done or outcome.done()):
                outcome = outcome.result()
            if not isinstance(outcome, PageResult):
                if all_done:
                    continue  # never read: Ctrl-C came first
                return
            summary.results.append(outcome)
            if on_page:
                on_page(outcome)
            reported = index + 1

    with ThreadPoolExecutor(workers, thread_name_prefix="cleandoc-io") as pool:
        try:
            start_reads()
            while reading or waiting:
                if not reading:  # the memory budget is held by pages still being encoded (none done yet)
                    wait([write for write, _ in writing], return_when=FIRST_COMPLETED)
                    start_reads()
                    continue
                index, job, read, begun = reading.popleft()
                if read is None:
                    outcomes[index] = clean_document(job, cleaner, options)
                    start_reads()
                    report()
                    continue
                decoded = read.result()
                del read  # it holds the decoded page too, which must go as soon as the cleaned one exists
                page = decoded
                if isinstance(decoded, _Decoded):
                    largest = max(largest, decoded.page.nbytes)
                    page = _clean(decoded.page, job, cleaner, options.binarize)
                    decoded.page = None  # cleaned in place or no longer needed
                if isinstance(page, PageResult):
                    outcomes[index] = page
                else:
                    outcomes[index] = write = pool.submit(_write, job, page, decoded, options, begun)
                    writing.append((write, page.nbytes))
                del page, decoded  # the encoder holds the only reference: its memory goes as soon as it is written
                start_reads()
                report()
        except KeyboardInterrupt:
            summary.interrupted = True
            for _, _, read, _ in reading:
                if read is not None:
                    read.cancel()
        report(all_done=True)
    summary.seconds = time.perf_counter() - started
    return summary
