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

from .files import Job
from .imageio import (
    PageError,
    read_gray,
    remove_stale_temporaries,
    to_uint8,
    to_unit_float,
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


def _read(job: Job, max_pixels: int) -> tuple[np.ndarray | PageResult, np.ndarray | None]:
    """The decoded page and the dark strokes in it (what the cleaned page is checked against: the page itself
    may be cleaned in place), or the failure and None."""
    try:
        page = read_gray(job.source, max_pixels)
    except PageError as exc:
        return PageResult(job, "failed", str(exc)), None
    return page, dark_strokes(page if page.dtype == np.uint8 else to_uint8(to_unit_float(page)))


def _decoded_bytes(read: Future, estimate: int) -> int:
    if not read.done():
        return estimate
    page, _ = read.result()
    return page.nbytes if isinstance(page, np.ndarray) else 0


def erasure_warning(cleaned: np.ndarray, strokes: np.ndarray) -> str | None:
    """A warning when the cleaned page has lost most of the input's dark strokes (see ERASURE_WARNING)."""
    kept = strokes_kept(cleaned, strokes)
    if kept >= ERASURE_WARNING:
        return None
    return (f"the cleaned page keeps only {kept:.0%} of the dark strokes in the input: the model may have erased "
            "text or drawings; check the page")


def _write(job: Job, cleaned: np.ndarray, strokes: np.ndarray, binarize: bool, begun: float) -> PageResult:
    warning = erasure_warning(cleaned, strokes)
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        write_page(job.output, cleaned, binary=binarize)
    except PageError as exc:
        return PageResult(job, "failed", str(exc))
    except OSError as exc:  # e.g. the output folder cannot be created
        return PageResult(job, "failed", f"cannot write output: {exc.strerror or exc}")
    return PageResult(job, "cleaned", megapixels=cleaned.size / 1e6, seconds=time.perf_counter() - begun,
                      warnings=[warning] if warning else [])


def _clean(page: np.ndarray, job: Job, cleaner: Cleaner) -> np.ndarray | PageResult:
    """The cleaned page, written over the decoded one when both are 8-bit (a huge scan then needs one buffer)."""
    try:
        return cleaner.run(page, out_dtype=np.uint8, out=page if page.dtype == np.uint8 else None)
    except torch.cuda.OutOfMemoryError:
        return PageResult(job, "failed", "out of GPU memory even with smaller tiles (try --tile or --batch-size)")


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
    reading: deque[tuple[int, Job, Future, float]] = deque()  # in job order: (index, job, decode, begun)
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
            if job.output.exists() and not options.overwrite:
                outcomes[index] = PageResult(job, "skipped", "output exists (use --overwrite to replace it)")
            else:
                reading.append((index, job, pool.submit(_read, job, options.max_pixels), time.perf_counter()))

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
                page, strokes = read.result()
                del read  # it holds the decoded page too, which must go as soon as the cleaned one exists
                if strokes is not None:
                    largest = max(largest, page.nbytes)
                    page = _clean(page, job, cleaner)
                if isinstance(page, PageResult):
                    outcomes[index] = page
                else:
                    outcomes[index] = write = pool.submit(_write, job, page, strokes, options.binarize, begun)
                    writing.append((write, page.nbytes))
                del page  # the encoder holds the only reference: its memory goes back as soon as it is written
                start_reads()
                report()
        except KeyboardInterrupt:
            summary.interrupted = True
            for _, _, read, _ in reading:
                read.cancel()
        report(all_done=True)
    summary.seconds = time.perf_counter() - started
    return summary
