"""The cleaning pipeline: pages decoded ahead and encoded behind on threads give exactly the pages of a plain
one-at-a-time loop, in job order, and read-ahead stays inside its memory budget."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import torch
from helpers import page_pixels, write_image

from cleandoc import clean as clean_module
from cleandoc import runtime
from cleandoc.api import Cleaner
from cleandoc.files import Job
from cleandoc.imageio import read_gray, read_image
from cleandoc.models import build_model
from cleandoc.options import CleanOptions

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(5)
    return build_model({"arch": "unet", "widths": [8, 16]}).eval()


@pytest.fixture
def folder_of_pages(tmp_path):
    """Nine pages of several kinds and sizes, one of them corrupt, one already cleaned."""
    source = tmp_path / "in"
    jobs = []
    for i in range(9):
        pixels = page_pixels(40 + 13 * i, 70 + 9 * i, seed=i)
        if i == 2:
            path = source / f"p{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
        elif i == 4:
            path = write_image(source / f"p{i}.png", pixels.astype(np.uint16) * 257)  # 16-bit
        elif i == 6:
            path = write_image(source / f"p{i}.jpg", cv2.cvtColor(pixels, cv2.COLOR_GRAY2BGR))
        else:
            path = write_image(source / f"p{i}.png", pixels)
        jobs.append(Job(path, tmp_path / "out" / f"p{i}.png"))
    write_image(jobs[7].output, page_pixels(10, 10))
    return jobs


def expected_page(model, source) -> np.ndarray:
    return Cleaner(model, tile=32, batch_size=2).run(read_gray(source))


def test_the_default_is_one_worker_per_core_the_process_may_use_even_past_eight(model, folder_of_pages,
                                                                               monkeypatch):
    """A GPU at 50 pages a second keeps some 8 cores busy with PNG codecs; a container's CPU set, not the host's
    core count, is what the process has."""
    pools = []

    class RecordingPool(clean_module.ThreadPoolExecutor):
        def __init__(self, workers, **options):
            pools.append(workers)
            super().__init__(workers, **options)

    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(clean_module, "ThreadPoolExecutor", RecordingPool)
    summary = Cleaner(model, tile=32).clean_files(folder_of_pages[:2])
    assert pools == [12] and summary.count("cleaned") == 2


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_pipeline_gives_the_pages_of_a_plain_loop_in_job_order(model, folder_of_pages, workers):
    reported = []
    summary = Cleaner(model, tile=32, batch_size=2).clean_files(folder_of_pages, CleanOptions(workers=workers),
                                                               on_page=reported.append)
    assert [r.job for r in summary.results] == folder_of_pages == [r.job for r in reported]
    statuses = [r.status for r in summary.results]
    assert statuses == ["cleaned", "cleaned", "failed", "cleaned", "cleaned", "cleaned", "cleaned", "skipped",
                        "cleaned"]
    assert "corrupt" in summary.results[2].reason
    for job, result in zip(folder_of_pages, summary.results):
        if result.status == "cleaned":
            written = cv2.imread(str(job.output), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(written, expected_page(model, job.source))
            assert result.megapixels == written.size / 1e6
    assert not folder_of_pages[2].output.exists()
    assert cv2.imread(str(folder_of_pages[7].output)).shape[:2] == (10, 10)  # skipped, not replaced


def test_inputs_are_not_modified(model, folder_of_pages):
    """The 8-bit page is cleaned in its own buffer: that buffer must be ours, never the caller's file."""
    before = {job.source: job.source.read_bytes() for job in folder_of_pages}
    Cleaner(model, tile=32).clean_files(folder_of_pages, CleanOptions(overwrite=True))
    assert {job.source: job.source.read_bytes() for job in folder_of_pages} == before


def count_live_pages(monkeypatch) -> dict:
    """Count pages between the start of their decoding and the end of their encoding."""
    state = {"live": 0, "most": 0}
    lock = threading.Lock()
    write_page = clean_module.write_page

    def counting_read(path, max_pixels):
        with lock:
            state["live"] += 1
            state["most"] = max(state["most"], state["live"])
        return read_image(path, max_pixels)

    def counting_write(path, page, **options):
        write_page(path, page, **options)
        with lock:
            state["live"] -= 1

    monkeypatch.setattr(clean_module, "read_image", counting_read)
    monkeypatch.setattr(clean_module, "write_page", counting_write)
    return state


def test_read_ahead_overlaps_pages_within_the_memory_budget(model, tmp_path, monkeypatch):
    jobs = [Job(write_image(tmp_path / f"in{i}.png", page_pixels(300, 300, seed=i)), tmp_path / "out" / f"{i}.png")
            for i in range(12)]
    state = count_live_pages(monkeypatch)
    Cleaner(model, tile=64).clean_files(jobs, CleanOptions(workers=4))
    assert 1 < state["most"] <= 5  # 4 decoding ahead, one under the model


def test_pages_over_the_memory_budget_go_one_at_a_time(model, tmp_path, monkeypatch):
    """A folder of huge scans must not hold several of them at once: with a budget below one page, the next
    page is read only once the previous one is written."""
    jobs = [Job(write_image(tmp_path / f"in{i}.png", page_pixels(300, 300, seed=i)), tmp_path / "out" / f"{i}.png")
            for i in range(6)]
    monkeypatch.setattr(clean_module, "PIPELINE_MEMORY", 300 * 300 - 1)
    state = count_live_pages(monkeypatch)
    summary = Cleaner(model, tile=64).clean_files(jobs, CleanOptions(workers=4))
    assert state["most"] == 1
    assert summary.count("cleaned") == 6
