"""The `cleandoc` command line, end to end on small generated pages and the tiny test model.

Most tests run the Typer app in-process with CliRunner (it captures the Rich error console, which looks up
sys.stderr when it prints); a few run the installed console script in a subprocess, where C libraries'
own stderr output and real tracebacks would also show.
"""

from __future__ import annotations

import errno
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import cli, console_script, digests, page_pixels, write_image

import cleandoc
from cleandoc import imageio
from cleandoc.api import Cleaner
from cleandoc.files import parse_shard, plan_jobs
from cleandoc.imageio import read_page
from cleandoc.store import load_model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- helpers -------------------------------------------------------------------------------------------


def clean_cli(inputs, out: Path, model: Path, *extra):
    return cli("clean", *inputs, "-o", out, "--model", model, "--device", "cpu", *extra)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png() -> bytes:
    """A few dozen bytes claiming a 100000 x 100000 gray image, with valid CRCs."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IEND", b"")


def png_ihdr(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG file's header."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    width, height, depth, colour = struct.unpack_from(">IIBB", data, 16)
    return width, height, depth, colour


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".cleandoc-tmp")]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


# --- what gets read and written ------------------------------------------------------------------------

ENCODINGS = [  # (file name, (height, width), how the pixels are made from a gray page, encoder params)
    ("gray8.png", (40, 60), lambda g: g, ()),
    ("gray16.png", (45, 70), lambda g: g.astype(np.uint16) * 257, ()),
    ("rgb.png", (50, 64), lambda g: np.dstack([g, np.roll(g, 3, 1), 255 - g // 4]), ()),
    ("rgba.png", (41, 59), lambda g: np.dstack([g, g, g, np.where(np.arange(g.shape[1]) < 20, 0, 255)
                                               .astype(np.uint8)[None, :].repeat(g.shape[0], 0)]), ()),
    ("photo.jpg", (48, 80), lambda g: np.dstack([g, g, g]), (cv2.IMWRITE_JPEG_QUALITY, 90)),
    ("scan.jpeg", (37, 51), lambda g: g, ()),
    ("tiff8.tif", (44, 66), lambda g: g, ()),
    ("tiff16.tiff", (43, 67), lambda g: g.astype(np.uint16) * 257, ()),
    ("bitmap.bmp", (39, 61), lambda g: np.dstack([g, g, g]), ()),
    ("web.webp", (42, 62), lambda g: np.dstack([g, g, g]), (cv2.IMWRITE_WEBP_QUALITY, 101)),
    ("UPPER.PNG", (52, 73), lambda g: g, ()),
    ("SHOUT.JPG", (40, 60), lambda g: g, ()),
]


def test_every_input_encoding_is_cleaned_at_its_size_as_8bit_gray_png(tmp_path, tiny_model_path):
    src, out = tmp_path / "in", tmp_path / "out"
    for i, (name, (height, width), make, params) in enumerate(ENCODINGS):
        pixels = make(page_pixels(height, width, seed=i))
        write_image(src / name, pixels, params)
    before = digests(src)

    result = clean_cli([src], out, tiny_model_path, "--precision", "fp32")  # compared with float32 below

    assert result.exit_code == 0, result.output
    assert f"{len(ENCODINGS)} cleaned, 0 skipped, 0 failed" in result.stderr
    assert digests(src) == before
    model, _ = load_model(tiny_model_path)
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(name).stem + ".png" for name, *_ in ENCODINGS)
    for name, (height, width), _, _ in ENCODINGS:
        output = out / (Path(name).stem + ".png")
        assert png_ihdr(output) == (width, height, 8, 0), name  # 8-bit, colour type 0 (gray)
        written = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint8 and written.shape == (height, width), name
        # The page that was cleaned is the decoded input (right scaling for 16-bit, alpha, colour).
        expected = np.rint(Cleaner(model).run(read_page(src / name), out_dtype=np.float32) * 255)
        assert np.abs(written.astype(np.float64) - expected).max() <= 1, name


@pytest.mark.parametrize("fmt", ["tif", "jpg"])
def test_output_format_option(tmp_path, tiny_model_path, fmt):
    src = write_image(tmp_path / "page.png", page_pixels(50, 70))
    out = tmp_path / "out"
    result = clean_cli([src], out, tiny_model_path, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert [p.name for p in out.iterdir()] == [f"page.{fmt}"]
    written = cv2.imread(str(out / f"page.{fmt}"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint8 and written.shape == (50, 70)


def test_precision_option_and_its_automatic_choice(tmp_path, tiny_model_path, monkeypatch):
    from cleandoc import runtime

    src = write_image(tmp_path / "page.png", page_pixels(64, 96))
    outputs = {}
    for precision in ("fp32", "bf16"):
        result = clean_cli([src], tmp_path / precision, tiny_model_path, "--precision", precision)
        assert result.exit_code == 0, result.output
        outputs[precision] = cv2.imread(str(tmp_path / precision / "page.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert 0 < np.abs(outputs["bf16"] - outputs["fp32"]).max() <= 8  # really bf16, and close
    for native, same_as in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda native=native: native)
        assert clean_cli([src], tmp_path / f"auto-{native}", tiny_model_path).exit_code == 0
        auto = cv2.imread(str(tmp_path / f"auto-{native}" / "page.png"), cv2.IMREAD_UNCHANGED).astype(int)
        assert np.array_equal(auto, outputs[same_as]), native
    bad = clean_cli([src], tmp_path / "bad", tiny_model_path, "--precision", "half")
    assert bad.exit_code == 2 and "half" in bad.output


def test_bad_files_are_reported_one_line_each_and_the_rest_is_cleaned(tmp_path, tiny_model_path):
    src, out = tmp_path / "in", tmp_path / "out"
    good = write_image(src / "good.png", page_pixels(40, 60))
    also_good = write_image(src / "zz_good.jpg", page_pixels(44, 52, seed=1))
    complete = write_image(tmp_path / "full.png", page_pixels(60, 80, seed=2)).read_bytes()
    bad = {
        "empty.png": b"",
        "truncated.png": complete[: len(complete) // 2],
        "text.png": b"this is a note, not an image\n",
        "bomb.png": bomb_png(),
    }
    for name, data in bad.items():
        (src / name).write_bytes(data)
    (src / "x.png").mkdir()
    before = digests(src)
    bad_paths = [src / name for name in bad] + [src / "x.png"]

    result = clean_cli([good, *bad_paths, also_good], out, tiny_model_path)

    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    for path in bad_paths:
        naming = [line for line in lines if line.startswith(f"{path}: ")]
        assert len(naming) == 1, (path, lines)
        assert len(naming[0]) > len(f"{path}: ") + 3, naming  # a reason follows the name
        assert not (out / path.name).exists()
    assert "over the" in next(line for line in lines if line.startswith(f"{src / 'bomb.png'}: "))
    assert "5 failed" in lines[-1] and "2 cleaned" in lines[-1]
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "zz_good.png"]
    assert digests(src) == before
    assert not temporaries(out)


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, tiny_model_path):
    src = write_image(tmp_path / "page.png", page_pixels(40, 60))
    out = tmp_path / "out"
    assert clean_cli([src], out, tiny_model_path).exit_code == 0
    output = out / "page.png"
    os.utime(output, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # an mtime no run would give
    data, inode = output.read_bytes(), output.stat().st_ino

    again = clean_cli([src], out, tiny_model_path)
    assert again.exit_code == 0, again.output
    assert "0 cleaned, 1 skipped, 0 failed" in again.stderr
    assert any(line.startswith("skipped ") and "page.png" in line for line in error_lines(again))
    assert output.stat().st_mtime_ns == 1_000_000_000_000_000_000
    assert output.stat().st_ino == inode and output.read_bytes() == data

    forced = clean_cli([src], out, tiny_model_path, "--overwrite")
    assert forced.exit_code == 0, forced.output
    assert "1 cleaned, 0 skipped, 0 failed" in forced.stderr
    assert output.stat().st_mtime_ns != 1_000_000_000_000_000_000  # rewritten (atomically: a new file)
    assert output.read_bytes() == data  # same input, same model: same result
    assert not temporaries(out)


@pytest.mark.parametrize("where", ["replace", "fsync"])
def test_failed_write_leaves_nothing_and_a_rerun_completes(tmp_path, tiny_model_path, monkeypatch, where):
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("a.png", "b.png", "c.png"):
        write_image(src / name, page_pixels(40, 60, seed=ord(name[0])))
    out.mkdir()
    real_replace, real_fsync = os.replace, os.fsync
    fsync_calls = []

    def failing_replace(source, target, *args, **kwargs):
        if Path(target).name == "b.png":
            raise OSError(errno.EIO, "injected I/O error")
        return real_replace(source, target, *args, **kwargs)

    def failing_fsync(fd):
        fsync_calls.append(fd)
        if len(fsync_calls) == 2:  # the second page written (outputs are written in sorted order)
            raise OSError(errno.EIO, "injected I/O error")
        return real_fsync(fd)

    if where == "replace":
        monkeypatch.setattr(imageio.os, "replace", failing_replace)
    else:
        monkeypatch.setattr(imageio.os, "fsync", failing_fsync)
    result = clean_cli([src], out, tiny_model_path)
    monkeypatch.undo()

    assert result.exit_code == 1, result.output
    failed = [line for line in error_lines(result) if line.startswith(f"{src / 'b.png'}: ")]
    assert len(failed) == 1 and "injected I/O error" in failed[0], result.stderr
    assert sorted(os.listdir(out)) == ["a.png", "c.png"]  # nothing under b's name, no hidden temporary

    rerun = clean_cli([src], out, tiny_model_path)
    assert rerun.exit_code == 0, rerun.output
    assert "1 cleaned, 2 skipped, 0 failed" in rerun.stderr
    assert sorted(os.listdir(out)) == ["a.png", "b.png", "c.png"]
    assert cv2.imread(str(out / "b.png"), cv2.IMREAD_UNCHANGED).shape == (40, 60)


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, tiny_model_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write_image(src / "page.png", page_pixels(40, 60))
    write_image(src / "sub" / "deep.png", page_pixels(40, 60, seed=3))
    (out / "sub").mkdir(parents=True)
    pid = dead_pid()
    stale = [out / f".page.png.{pid}.0badc0de.cleandoc-tmp", out / "sub" / f".deep.png.{pid}.12345678.cleandoc-tmp"]
    live = out / f".other.png.{os.getpid()}.abcdef01.cleandoc-tmp"  # this process is alive: not stale
    unrelated = out / "notes.txt"
    for path in (*stale, live, unrelated):
        path.write_bytes(b"half a page")

    result = clean_cli([src], out, tiny_model_path, "--recursive")

    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in stale)
    assert live.exists() and unrelated.exists()
    assert (out / "page.png").is_file() and (out / "sub" / "deep.png").is_file()


def test_recursive_mirrors_the_tree(tmp_path, tiny_model_path):
    src, out = tmp_path / "in", tmp_path / "out"
    write_image(src / "a" / "page.png", page_pixels(40, 60, seed=1))
    write_image(src / "b" / "page.png", page_pixels(48, 64, seed=2))
    write_image(src / "b" / "c" / "more.tif", page_pixels(36, 44, seed=3))

    flat = clean_cli([src], out, tiny_model_path)
    assert flat.exit_code == 1
    assert "--recursive" in flat.stderr
    assert not out.exists() or not any(out.rglob("*.png"))

    result = clean_cli([src], out, tiny_model_path, "-r")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a/page.png", "b/c/more.png", "b/page.png"]
    assert cv2.imread(str(out / "a" / "page.png"), cv2.IMREAD_UNCHANGED).shape == (40, 60)
    assert cv2.imread(str(out / "b" / "page.png"), cv2.IMREAD_UNCHANGED).shape == (48, 64)


def test_shards_split_the_pages_without_overlap(tmp_path, tiny_model_path):
    src = tmp_path / "in"
    names = [f"p{i}.png" for i in range(7)]
    for i, name in enumerate(names):
        write_image(src / name, page_pixels(32, 40, seed=i))
    written: list[str] = []
    for k in (1, 2, 3):
        out = tmp_path / f"out{k}"
        result = clean_cli([src], out, tiny_model_path, "--shard", f"{k}/3")
        assert result.exit_code == 0, result.output
        share = {job.output.name for job in plan_jobs([str(src)], out, shard=parse_shard(f"{k}/3")).jobs}
        got = sorted(p.name for p in out.iterdir())
        assert set(got) == share and got, (k, got)
        cleaned_lines = [line for line in error_lines(result) if line.startswith("cleaned ")]
        assert len(cleaned_lines) == len(got)
        assert f"(shard {k}/3, {len(got)} of 7 pages)" in result.stderr
        written += got
    assert sorted(written) == sorted(names)  # every page once, none twice


@pytest.mark.parametrize("value", ["0/3", "x", "4/3", "3/0", "1/3/2"])
def test_bad_shard_value_is_a_one_line_usage_error(tmp_path, tiny_model_path, value):
    src = write_image(tmp_path / "page.png", page_pixels(40, 60))
    result = clean_cli([src], tmp_path / "out", tiny_model_path, "--shard", value)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and "shard" in lines[0] and value in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_missing_model_file_is_a_one_line_error(tmp_path):
    src = write_image(tmp_path / "page.png", page_pixels(40, 60))
    missing = tmp_path / "nowhere" / "model.safetensors"
    result = clean_cli([src], tmp_path / "out", missing)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and str(missing) in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["a[/x]b.safetensors", "[bold]model.safetensors"])
def test_error_naming_a_path_with_brackets_is_printed_verbatim(tmp_path, name):
    src = write_image(tmp_path / "page.png", page_pixels(40, 60))
    missing = tmp_path / name
    result = clean_cli([src], tmp_path / "out", missing)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and str(missing) in lines[0], lines


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip-pt", "legacy-pickle"])
def test_pickle_model_is_refused_with_a_one_line_error(tmp_path, zipfile):
    src = write_image(tmp_path / "page.png", page_pixels(40, 60))
    pickled = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, pickled, _use_new_zipfile_serialization=zipfile)
    result = clean_cli([src], tmp_path / "out", pickled)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and str(pickled) in lines[0] and "pickle" in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_quiet_prints_nothing_on_success(tmp_path, tiny_model_path):
    src = write_image(tmp_path / "page.png", page_pixels(40, 60))
    result = clean_cli([src], tmp_path / "out", tiny_model_path, "--quiet")
    assert result.exit_code == 0
    assert result.output == ""
    assert (tmp_path / "out" / "page.png").is_file()


def test_quiet_still_reports_failures(tmp_path, tiny_model_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    result = clean_cli([tmp_path / "bad.png"], tmp_path / "out", tiny_model_path, "-q")
    assert result.exit_code == 1
    assert error_lines(result) == [f"{tmp_path / 'bad.png'}: not an image (unrecognised content)"]


def test_summary_counts_pages(tmp_path, tiny_model_path):
    src = tmp_path / "in"
    for i in range(3):
        write_image(src / f"p{i}.png", page_pixels(40, 60, seed=i))
    result = clean_cli([src], tmp_path / "out", tiny_model_path)
    assert result.exit_code == 0
    assert result.stdout == ""  # everything goes to stderr
    lines = error_lines(result)
    assert len(lines) == 4 and all(line.startswith("cleaned ") for line in lines[:3])
    assert lines[-1].startswith("3 cleaned, 0 skipped, 0 failed in ")


def test_shipped_model_by_name_and_workers_option(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        write_image(src / f"p{i}.png", page_pixels(60, 90, seed=i))
    result = cli("clean", src, "-o", tmp_path / "out", "--model", "default", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png", "p2.png"]


def test_small_tiles_match_the_default_tile(tmp_path, tiny_model_path):
    src = write_image(tmp_path / "page.png", page_pixels(200, 300, seed=5))
    tiled, whole = tmp_path / "tiled", tmp_path / "whole"
    assert clean_cli([src], tiled, tiny_model_path, "--tile", "64", "--batch-size", "3").exit_code == 0
    assert clean_cli([src], whole, tiny_model_path).exit_code == 0
    a = cv2.imread(str(tiled / "page.png"), cv2.IMREAD_UNCHANGED).astype(np.int16)
    b = cv2.imread(str(whole / "page.png"), cv2.IMREAD_UNCHANGED).astype(np.int16)
    assert a.shape == b.shape == (200, 300)
    assert np.abs(a - b).max() <= 1


def test_output_that_is_a_file_is_refused(tmp_path, tiny_model_path):
    src = write_image(tmp_path / "page.png", page_pixels(40, 60))
    (tmp_path / "out").write_text("a file")
    result = clean_cli([src], tmp_path / "out", tiny_model_path)
    assert result.exit_code == 2
    assert len(error_lines(result)) == 1 and "not a folder" in result.stderr


def test_version():
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cleandoc {cleandoc.__version__}"


def test_console_script_end_to_end(tmp_path, tiny_model_path):
    """The installed `cleandoc` script in a real process: C-level stderr and tracebacks would show here."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_image(src / "one.png", page_pixels(40, 60, seed=1))
    write_image(src / "two.jpg", page_pixels(45, 65, seed=2))
    complete = write_image(tmp_path / "full.png", page_pixels(60, 80, seed=3)).read_bytes()
    (src / "truncated.png").write_bytes(complete[: len(complete) // 2])
    (src / "bomb.png").write_bytes(bomb_png())
    before = digests(src)
    env = {**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"}

    process = subprocess.run([console_script(), "clean", str(src), "-o", str(out), "--model", str(tiny_model_path),
                              "--device", "cpu"], capture_output=True, text=True, timeout=120, env=env)

    assert process.returncode == 1, process.stderr
    assert "Traceback" not in process.stderr and "Traceback" not in process.stdout
    assert process.stdout == ""
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    # Nothing but our lines: one per page and the summary (no libpng or OpenCV chatter).
    assert len(lines) == 5, lines
    assert sum(line.startswith(f"{src / 'truncated.png'}: ") for line in lines) == 1
    assert sum(line.startswith(f"{src / 'bomb.png'}: ") for line in lines) == 1
    assert lines[-1].startswith("2 cleaned, 0 skipped, 2 failed")
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "two.png"]
    assert digests(src) == before


def test_python_dash_m_version():
    process = subprocess.run([sys.executable, "-m", "cleandoc", "--version"], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == f"cleandoc {cleandoc.__version__}"


# --- one file, pipes, the summary and threads ------------------------------------------------------------


def test_one_file_to_one_file_when_the_output_names_an_image(tmp_path, tiny_model_path):
    src = write_image(tmp_path / "page.jpg", page_pixels(40, 60))
    result = clean_cli([src], tmp_path / "page-clean.png", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["page-clean.png", "page.jpg"]
    assert png_ihdr(tmp_path / "page-clean.png")[:2] == (60, 40)
    tif = clean_cli([src], tmp_path / "out" / "page.tif", tiny_model_path)  # the extension sets the format
    assert tif.exit_code == 0 and (tmp_path / "out" / "page.tif").read_bytes()[:4] in (b"II*\0", b"MM\0*")
    same = clean_cli([src], src, tiny_model_path)
    assert same.exit_code == 2 and "overwrite the input" in same.stderr


def test_a_page_piped_through_stdin_and_stdout(tmp_path, tiny_model_path):
    src = write_image(tmp_path / "page.png", page_pixels(40, 60))
    process = subprocess.run([console_script(), "clean", "-", "-o", "-", "--model", str(tiny_model_path), "-q"],
                             input=src.read_bytes(), capture_output=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.returncode == 0, process.stderr
    assert process.stdout.startswith(PNG_SIGNATURE) and process.stderr == b""
    piped = cv2.imdecode(np.frombuffer(process.stdout, np.uint8), cv2.IMREAD_UNCHANGED)
    assert clean_cli([src], tmp_path / "file.png", tiny_model_path, "--precision", "auto").exit_code == 0
    np.testing.assert_array_equal(piped, cv2.imread(str(tmp_path / "file.png"), cv2.IMREAD_UNCHANGED))
    bad = subprocess.run([console_script(), "clean", "-", "-o", "-", "--model", str(tiny_model_path)],
                         input=b"not an image", capture_output=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout == b"" and b"not an image" in bad.stderr
    mixed = clean_cli(["-", src], tmp_path / "out", tiny_model_path)
    assert mixed.exit_code == 2 and "standard input" in mixed.stderr


def test_json_summary_has_every_page_with_status_seconds_and_warnings(tmp_path, tiny_model_path):
    import json

    write_image(tmp_path / "in" / "a.png", page_pixels(40, 60))
    (tmp_path / "in" / "b.png").write_bytes(b"garbage")
    result = clean_cli([tmp_path / "in", tmp_path / "missing.png"], tmp_path / "out", tiny_model_path, "--json",
                       tmp_path / "summary.json")
    assert result.exit_code == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["cleaned"], summary["skipped"], summary["failed"], summary["warned"]) == (1, 0, 2, 0)
    pages = {Path(p["input"]).name: p for p in summary["pages"]}
    assert pages["a.png"]["status"] == "cleaned" and pages["a.png"]["seconds"] > 0
    assert pages["a.png"]["warnings"] == [] and pages["a.png"]["output"] == str(tmp_path / "out" / "a.png")
    assert pages["b.png"]["status"] == "failed" and "not an image" in pages["b.png"]["reason"]
    assert pages["missing.png"]["reason"] == "no such file or folder"


def test_threads_option_sets_the_model_threads(tmp_path, tiny_model_path, monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    src = write_image(tmp_path / "page.png", page_pixels(30, 30))
    assert clean_cli([src], tmp_path / "out", tiny_model_path, "--threads", "3").exit_code == 0
    assert calls == [3]
    assert clean_cli([src], tmp_path / "out2", tiny_model_path, "--threads", "0").exit_code == 2


def test_exit_codes_are_documented_in_the_help():
    result = cli("clean", "--help")
    text = " ".join(result.stdout.split())
    assert "Exit status: 0" in text and "1 when a page failed" in text and "130 when interrupted" in text
