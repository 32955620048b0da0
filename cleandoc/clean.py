"""Clean a list of pages: read, run the model tiled, write atomically; one bad page never stops the run.

Pages flow through a pipeline: worker threads decode the next pages and encode the finished ones while the
model runs on the current one (OpenCV releases the GIL), so on a GPU the model does not wait for PNG codecs.
Kept apart from `files.py` (which only decides what goes where) so that Python callers can clean their own
job list with the same skip, failure and progress rules as the CLI.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
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

# Pages decoded ahead and cleaned pages waiting to be encoded hold at most this much memory together (one page
# may always be in flight, however large), so read-ahead never multiplies the footprint of huge scans.
PIPELINE_MEMORY = 512 * 2**20


@dataclass
class CleanOptions:
    tile: int = 0  # 0: tiling.default_tile
    batch_size: int = 0  # 0: tiling.default_batch
    dtype: torch.dtype | None = None  # autocast precision; None for float32
    overwrite: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 0  # threads decoding and encoding pages beside the model; 0: default_workers()


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


def default_workers() -> int:
    """One decoding and encoding thread per core this process may run on. The PNG codecs take 0.15–0.17 s of a
    core per A4 page (`bench/speed.py` prints the figure), so a GPU that cleans 50 pages a second keeps some 8
    cores busy with them and needs every core it can get; on a CPU the threads mostly wait for the model. The
    pipeline's memory budget, not the thread count, bounds the pages in flight."""
    try:
        return len(os.sched_getaffinity(0))  # the cores a container or `taskset` leaves us, not the machine's
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _read(job: Job, max_pixels: int) -> np.ndarray | PageResult:
    try:
        return read_gray(job.source, max_pixels)
    except PageError as exc:
        return PageResult(job, "failed", str(exc))


def _decoded_bytes(read: Future, estimate: int) -> int:
    if not read.done():
        return estimate
    page = read.result()
    return page.nbytes if isinstance(page, np.ndarray) else 0


def _write(job: Job, cleaned: np.ndarray, begun: float) -> PageResult:
    try:
        job.output.parent.mkdir(parents=True, exist_ok=True)
        write_page(job.output, cleaned)
    except PageError as exc:
        return PageResult(job, "failed", str(exc))
    except OSError as exc:  # e.g. the output folder cannot be created
        return PageResult(job, "failed", f"cannot write output: {exc.strerror or exc}")
    return PageResult(job, "cleaned", megapixels=cleaned.size / 1e6, seconds=time.perf_counter() - begun)


def _clean(page: np.ndarray, job: Job, model: torch.nn.Module, options: CleanOptions,
           device: torch.device) -> np.ndarray | PageResult:
    """The cleaned page, written over the decoded one when both are 8-bit (a huge scan then needs one buffer)."""
    try:
        return run(model, page, tile=options.tile, batch_size=options.batch_size, device=device,
                   dtype=options.dtype, out_dtype=np.uint8, out=page if page.dtype == np.uint8 else None)
    except torch.cuda.OutOfMemoryError:
        return PageResult(job, "failed", "out of GPU memory (try a smaller --tile or --batch-size)")


def clean_pages(jobs: list[Job], model: torch.nn.Module, options: CleanOptions, device: torch.device,
                on_page: Callable[[PageResult], None] | None = None) -> Summary:
    """Clean every job; results are reported in job order. Ctrl-C stops reading new pages, lets the pages
    already cleaned finish writing, and returns the summary so far."""
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
                page = read.result()
                del read  # it holds the decoded page too, which must go as soon as the cleaned one exists
                if isinstance(page, np.ndarray):
                    largest = max(largest, page.nbytes)
                    page = _clean(page, job, model, options, device)
                if isinstance(page, PageResult):
                    outcomes[index] = page
                else:
                    outcomes[index] = write = pool.submit(_write, job, page, begun)
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
