"""The benchmark script keeps working: it prints its table for any model, with or without the shared data."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "bench.py"), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_bench_prints_one_table_per_model_beside_the_classic_binarisers(tiny_model_path, tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n\nkept\n")
    result = run_bench("--model", str(tiny_model_path), "--model", str(tiny_model_path), "--data",
                       str(tmp_path / "absent"), "--repeats", "1", "--skip", "scale", "--write", str(docs))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("| figure | do nothing | Otsu | Sauvola | cleandoc |") == 2
    assert "DIBCO 2016: data not found" in result.stdout
    faint = [line for line in result.stdout.splitlines() if line.startswith("| faint printed ink at contrast 0.25:")]
    assert len(faint) == 6 and all(cell.strip().endswith("%") for cell in faint[0].strip("| ").split(" | ")[1:])
    assert sum("core pixels" in line for line in faint) == 2  # strokes that thin, told from strokes that vanish
    assert sum("binarised" in line and line.rstrip(" |").endswith("%") for line in faint) == 2
    figures = [line for line in result.stdout.splitlines() if line.startswith("| figures, ")]
    assert len(figures) == 2 * 2 * 5  # per model and kind of figure: the grey page and the binarised one
    assert all(re.fullmatch(r"\d+\.\d% \(\d+\.\d%\)", cell) for cell in figures[0].strip("| ").split(" | ")[1:])
    assert "CPU s per A4 300-dpi page" in result.stdout
    written = docs.read_text()
    assert written.startswith("# Benchmarks\n\nkept\n") and "<!-- begin bench.py -->" in written
    assert "torch " in written and "commit " in written  # stamped
    again = run_bench("--model", str(tiny_model_path), "--data", str(tmp_path / "absent"), "--repeats", "1",
                      "--skip", "scale,faint", "--skip", "ocr", "--write", str(docs))
    assert again.returncode == 0 and docs.read_text().count("<!-- begin bench.py -->") == 1  # replaced, not added
    assert "faint printed ink" not in again.stdout and "CPU s per A4 300-dpi page" in again.stdout
    unknown = run_bench("--model", str(tiny_model_path), "--skip", "scale,speeed")
    assert unknown.returncode == 2 and "--skip: no such group of rows: speeed" in unknown.stderr


def test_speed_bench_prints_its_table(tiny_model_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "speed.py"), "--model", str(tiny_model_path), "--pages", "1",
         "--huge", "3000"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert ("| 1 A4 300-dpi pages, PNG in and out | s per page | pages per s | ratio to unpaper | start-up, s "
            "| s per page after start-up | its ratio | peak RSS, MB | validation RMSE |") in result.stdout
    lines = result.stdout.splitlines()
    row = next(line for line in lines if line.startswith(f"| cleandoc clean --model {tiny_model_path} (unet "))
    cells = row.strip("| ").split(" | ")
    assert len(cells) == 9 and float(cells[4]) > 0  # start-up timed, beside the per-page figures
    assert f"| cleandoc clean --model {tiny_model_path}, one 3000×3000 page (9 MP) |" in result.stdout
    codecs = next(line for line in lines if line.startswith("PNG codecs, one core per page: read + decode "))
    assert "worker threads here (one per core) feed at most" in codecs


def test_bench_refuses_a_device_that_is_not_there_in_one_line(tiny_model_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--model", str(tiny_model_path), "--device", "cuda:99"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "device 'cuda:99' is not available on this machine" in result.stderr
