"""Nothing lost under kills, interrupts, concurrent runs and hostile bytes: real `cleandoc` processes killed at
random moments, two runs racing on one folder, awkward encodings, and a property-based fuzz of the
decode-and-clean path. docs/reliability.md lists which test proves what."""

from __future__ import annotations

import errno
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import cli, console_script, digests, page_pixels, write_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cleandoc import imageio
from cleandoc.api import Cleaner
from cleandoc.imageio import PageError, read_page
from cleandoc.store import load_checkpoint, load_model
from cleandoc.train import checkpoint_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
PAGES = 24


def clean_command(src: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [console_script(), "clean", str(src), "-o", str(out), "--model", str(model), "--device", "cpu", *extra]


def outputs(folder: Path) -> dict[str, bytes]:
    """The finished pages in a folder (hidden temporaries left out)."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")} if folder.exists() else {}


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tiny_model_path) -> dict:
    """A folder of pages and the outputs of one uninterrupted run over it (PNG output is deterministic)."""
    root = tmp_path_factory.mktemp("reliability")
    src = root / "in"
    for i in range(PAGES):
        write_image(src / f"page-{i:02d}.png", page_pixels(480, 640, seed=i))
    reference = root / "reference"
    process = subprocess.run(clean_command(src, reference, tiny_model_path), capture_output=True, text=True,
                             timeout=300, env=ENV)
    assert process.returncode == 0, process.stderr
    started = time.monotonic()
    subprocess.run([console_script(), "--version"], capture_output=True, timeout=60, env=ENV)
    return {"src": src, "reference": outputs(reference), "startup": time.monotonic() - started}


# --- kill safety ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_clean_killed_at_a_random_moment_leaves_only_complete_pages_and_a_rerun_finishes(
        folder, tiny_model_path, tmp_path, seed):
    src, out = folder["src"], tmp_path / "out"
    before = digests(src)
    process = subprocess.Popen(clean_command(src, out, tiny_model_path, "-q"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=ENV)
    time.sleep(random.Random(seed).uniform(0.5, folder["startup"] + 2.0))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    survived = outputs(out)
    for name, data in survived.items():  # every page under a real name is whole: byte-identical to the reference
        assert data == folder["reference"][name], name
    rerun = subprocess.run(clean_command(src, out, tiny_model_path), capture_output=True, text=True, timeout=300,
                           env=ENV)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{PAGES - len(survived)} cleaned, {len(survived)} skipped, 0 failed" in rerun.stderr
    assert sorted(os.listdir(out)) == sorted(folder["reference"])  # the killed run's temporary is gone too
    assert outputs(out) == folder["reference"]
    assert digests(src) == before


def test_ctrl_c_stops_promptly_with_the_summary_so_far(folder, tiny_model_path, tmp_path):
    """Ten links to each page, so that the run is still going when the first page is out, however fast it is."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in folder["reference"]:
        for copy in range(10):
            os.link(folder["src"] / name, src / f"{copy}-{name}")
    # A shell starts background jobs with SIGINT ignored, which a child inherits, and Python then never raises
    # KeyboardInterrupt: give cleandoc the default disposition, as a terminal's foreground job has.
    process = subprocess.Popen(clean_command(src, out, tiny_model_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for(lambda: out.exists() and any(not p.name.startswith(".") for p in out.iterdir()))
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    # Under a second on an idle machine; the bound is loose because test machines are shared and noisy. That it
    # stopped rather than ran on is shown by the pages it did not write (below).
    assert time.monotonic() - sent < 10.0
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = [line for line in stderr.splitlines() if "cleaned," in line]
    assert len(summary) == 1 and summary[0].startswith("interrupted: "), stderr
    written = outputs(out)
    assert 0 < len(written) < 10 * PAGES
    assert all(data == folder["reference"][name.split("-", 1)[1]] for name, data in written.items())


def test_two_runs_on_the_same_folders_give_complete_correct_pages(folder, tiny_model_path, tmp_path):
    out = tmp_path / "out"
    runs = [subprocess.Popen(clean_command(folder["src"], out, tiny_model_path), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(2)]
    results = [process.communicate(timeout=300) for process in runs]
    assert [process.returncode for process in runs] == [0, 0], results
    assert sorted(os.listdir(out)) == sorted(folder["reference"])
    assert outputs(out) == folder["reference"]


def test_train_killed_mid_run_resumes_from_an_intact_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        clean = np.full((64, 96), 245, np.uint8)
        clean[10 + 3 * i:20 + 3 * i, 8:80] = 25
        write_image(tmp_path / "clean" / f"{i}.png", clean)
        write_image(tmp_path / "dirty" / f"{i}.png",
                    np.clip(clean + rng.normal(0, 30, clean.shape), 0, 255).astype(np.uint8))
    out = tmp_path / "model.safetensors"
    command = [sys.executable, "-m", "cleandoc", "train", "--pairs", f"{tmp_path / 'dirty'}:{tmp_path / 'clean'}",
               "-o", str(out), "--widths", "8,16", "--convs", "1", "--patch-size", "32",
               "--batch-size", "4", "--patches-per-epoch", "64", "--epochs", "8", "--device", "cpu", "-q"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    wait_for(lambda: checkpoint_path(out).exists(), timeout=120)
    time.sleep(random.Random(1).uniform(0.0, 0.5))  # somewhere in a later epoch, maybe mid-save
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    _, _, state = load_checkpoint(checkpoint_path(out))  # never torn: it loads
    killed_at = state["epoch"]
    assert 1 <= killed_at <= 8
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    history = load_checkpoint(checkpoint_path(out))[2]["history"]
    assert [h["epoch"] for h in history] == list(range(1, 9))  # no epoch lost or repeated in the record
    assert load_model(out)[1].provenance["epoch"] >= 1


# --- awkward and broken files --------------------------------------------------------------------------------


def pil_bytes(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def test_palette_png_reads_as_its_gray_values(tmp_path):
    gray = page_pixels(30, 40)
    palette_image = Image.fromarray(gray).convert("P")
    (tmp_path / "p.png").write_bytes(pil_bytes(palette_image, "PNG"))
    expected = np.asarray(palette_image.convert("L"), np.float32) / 255
    assert np.abs(read_page(tmp_path / "p.png") - expected).max() <= 1.5 / 255


def test_cmyk_jpeg_reads_as_gray(tmp_path):
    gray = page_pixels(32, 48)
    (tmp_path / "cmyk.jpg").write_bytes(pil_bytes(Image.fromarray(gray).convert("CMYK"), "JPEG", quality=95))
    page = read_page(tmp_path / "cmyk.jpg")
    assert page.shape == (32, 48)
    assert np.abs(page - gray / 255).mean() < 0.05


def test_a_multi_page_tiff_is_a_document_and_under_another_name_is_refused_with_its_page_count(tmp_path):
    from cleandoc.documents import is_document

    pages = [Image.fromarray(page_pixels(20, 30, seed=i)) for i in range(3)]
    (tmp_path / "book.tif").write_bytes(pil_bytes(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert is_document(tmp_path / "book.tif")
    (tmp_path / "book.png").write_bytes((tmp_path / "book.tif").read_bytes())
    with pytest.raises(PageError, match=r"multi-page TIFF \(3 pages\) under a name"):
        read_page(tmp_path / "book.png")
    (tmp_path / "one.tif").write_bytes(pil_bytes(pages[0], "TIFF"))
    assert read_page(tmp_path / "one.tif").shape == (20, 30) and not is_document(tmp_path / "one.tif")


def test_a_fifo_named_like_a_page_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(PageError, match="^not a regular file$"):
        read_page(fifo)


def test_extreme_shapes_unicode_names_and_a_full_disk(tmp_path, tiny_model_path, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    write_image(src / "thin 1×1 ünïcode.png", np.full((1, 1), 90, np.uint8))
    write_image(src / "tall strip.png", rng.integers(0, 256, (2000, 3), dtype=np.uint8))
    write_image(src / "wide strip.png", rng.integers(0, 256, (2, 1500), dtype=np.uint8))
    result = cli("clean", src, "-o", out, "--model", tiny_model_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    shapes = {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in out.iterdir()}
    assert shapes == {"thin 1×1 ünïcode.png": (1, 1), "tall strip.png": (2000, 3), "wide strip.png": (2, 1500)}

    class FullDisk:  # what os.fdopen gives the writer when the disk is full
        def __init__(self, fd, *args):
            self.fd = fd

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            os.close(self.fd)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(imageio.os, "fdopen", FullDisk)
    full = cli("clean", src, "-o", tmp_path / "full", "--model", tiny_model_path, "--device", "cpu")
    monkeypatch.undo()
    assert full.exit_code == 1
    failures = [line for line in full.stderr.splitlines() if "No space left on device" in line]
    assert len(failures) == 3, full.stderr
    assert not any((tmp_path / "full").iterdir())  # no partial page, no temporary


# --- fuzzing the decode-and-clean path ------------------------------------------------------------------------


def _seed_files() -> list[bytes]:
    gray = page_pixels(24, 32, seed=5)
    encoded = [cv2.imencode(ext, gray)[1].tobytes() for ext in (".png", ".jpg", ".tif", ".bmp", ".webp")]
    encoded.append(cv2.imencode(".png", np.dstack([gray, gray, gray, gray]))[1].tobytes())
    encoded.append(cv2.imencode(".png", gray.astype(np.uint16) * 257)[1].tobytes())
    return encoded


SEEDS = _seed_files()


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path):
    return load_model(tiny_model_path)[0]


def decode_and_clean(data: bytes, model) -> None:
    """What `clean` does with a file's bytes: either a page of the right size in [0, 1] comes out, or PageError."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "page.png"
        path.write_bytes(data)
        try:
            page = read_page(path, max_pixels=200_000)
        except PageError as exc:
            assert "\n" not in str(exc) and str(exc)
            return
    assert page.ndim == 2 and page.dtype == np.float32
    assert np.isfinite(page).all() and page.min() >= 0 and page.max() <= 1
    cleaned = Cleaner(model, tile=64).run(page, out_dtype=np.float32)
    assert cleaned.shape == page.shape


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_fuzz_arbitrary_bytes(tiny_model, data):
    decode_and_clean(data, tiny_model)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                    max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_fuzz_damaged_images(tiny_model, seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[:cut % len(data)]
    decode_and_clean(bytes(data), tiny_model)
