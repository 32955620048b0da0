"""The benchmark script keeps working: it prints its table for any model, with or without the shared data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import bench_script

from cleandoc.data import find_pairs
from cleandoc.evaluate import evaluate
from cleandoc.store import load_model

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_a_table_without_shared_data(tiny_model_path, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--model", str(tiny_model_path), "--data",
         str(tmp_path / "absent"), "--repeats", "1", "--synth", "1", "--dpi", "50", "--precision", "bf16"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "quality skipped" in result.stdout and "precision: bf16 (torch.bfloat16)" in result.stdout
    assert "| figure | do nothing | cleandoc |" in result.stdout
    assert "synthetic A4 pages at 50 dpi" in result.stdout and "CPU s per A4 300-dpi page" in result.stdout


def test_bench_compares_models_on_one_validation_split(tiny_model_path, tmp_path):
    rng = np.random.default_rng(0)
    for folder in ("train", "train_cleaned"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for i in range(5):  # five distinct clean pages: five page groups, one of them held out
        clean = np.full((48, 64), 250, np.uint8)
        clean[8 + i:20 + i, 10:50] = 30
        dirty = np.clip(clean + rng.normal(0, 25, clean.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "data" / "train" / f"{i}.png"), dirty)
        cv2.imwrite(str(tmp_path / "data" / "train_cleaned" / f"{i}.png"), clean)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--data", str(tmp_path / "data"), "--compare",
         str(tiny_model_path), str(tiny_model_path), "--repeats", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith(f"| {tiny_model_path.name} |")]
    assert len(rows) == 2 and rows[0][:-1] == rows[1][:-1]  # all but the time: the same model, scored twice
    assert rows[0][-2] == "616" and float(rows[0][-1].strip(" |")) > 0  # tiny U-Net's multiply-adds per pixel
    assert "| do nothing |" in result.stdout and "validation: 1 pages, 1 page groups" in result.stdout


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


def test_error_near_ink_splits_the_squared_error_by_where_the_ink_is(tiny_model_path, tmp_path):
    clean = np.full((64, 64), 255, np.uint8)
    clean[30:34, 10:20] = 0  # 40 ink pixels; with 2 px around them, 14 × 8 = 112 pixels
    dirty = clean.copy()
    dirty[31, 21] = 155  # within 2 px of the ink (squared error 100² in 8-bit units)
    dirty[0:3, 60:63] = 155  # far from it (9 pixels)
    for folder, page in (("dirty", dirty), ("clean", clean)):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "page.png"), page)
    _, pages = evaluate(find_pairs(tmp_path / "dirty", tmp_path / "clean"), load_model(tiny_model_path),
                        torch.device("cpu"), worst=1)
    before, after, pixels = bench_script().error_near_ink(pages)
    assert before == pytest.approx(1 / 10) and pixels == pytest.approx(112 / 64**2)
    assert 0 <= after <= 1
