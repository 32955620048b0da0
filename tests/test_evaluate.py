"""Metrics equal hand computations; `evaluate` scores pages against the do-nothing baseline and draws them."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from cleandoc.api import Cleaner
from cleandoc.cli import app
from cleandoc.data import find_pairs
from cleandoc.evaluate import evaluate
from cleandoc.metrics import psnr, rmse, ssim
from cleandoc.tiling import run_whole


def test_rmse_and_psnr_by_hand():
    a = np.array([[0.0, 0.5], [1.0, 1.0]], np.float32)
    b = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    expected = math.sqrt((0.25 ** 2 + 0.5 ** 2) / 4)
    assert rmse(a, b) == pytest.approx(expected, abs=1e-12)
    assert psnr(a, b) == pytest.approx(20 * math.log10(1 / expected), abs=1e-9)
    assert psnr(a, a) == math.inf


def test_ssim_is_one_for_identical_pages_and_drops_with_damage():
    rng = np.random.default_rng(0)
    page = rng.random((64, 64)).astype(np.float32)
    assert ssim(page, page) == pytest.approx(1.0, abs=1e-9)
    noisy = np.clip(page + rng.normal(0, 0.2, page.shape), 0, 1).astype(np.float32)
    assert 0 < ssim(page, noisy) < 0.9
    assert ssim(page, 1 - page) < 0


@pytest.fixture()
def pairs_dir(tmp_path):
    rng = np.random.default_rng(1)
    for name, (h, w) in {"a": (40, 60), "b": (70, 33), "c": (16, 16)}.items():
        clean = np.full((h, w), 255, np.uint8)
        clean[h // 4: h // 2, w // 4: 3 * w // 4] = 20
        dirty = np.clip(clean.astype(int) - rng.integers(0, 90, (h, w)), 0, 255).astype(np.uint8)
        for folder, image in (("dirty", dirty), ("clean", clean)):
            (tmp_path / folder).mkdir(exist_ok=True)
            cv2.imwrite(str(tmp_path / folder / f"{name}.png"), image)
    return tmp_path


def test_evaluate_pools_rmse_over_every_pixel_like_a_hand_computation(pairs_dir, tiny_model_path):
    cleaner = Cleaner.load(tiny_model_path, device="cpu", precision="fp32")
    pairs = find_pairs(pairs_dir / "dirty", pairs_dir / "clean")
    report, worst = evaluate(pairs, cleaner, worst=2)
    squared, squared_input, count = 0.0, 0.0, 0
    for pair in pairs:
        dirty = cv2.imread(str(pair.dirty), cv2.IMREAD_GRAYSCALE) / 255.0
        clean = cv2.imread(str(pair.clean), cv2.IMREAD_GRAYSCALE) / 255.0
        cleaned = np.rint(run_whole(cleaner.model, dirty.astype(np.float32)) * 255) / 255  # as clean writes it
        squared += ((cleaned - clean) ** 2).sum()
        squared_input += ((dirty - clean) ** 2).sum()
        count += clean.size
    assert report.rmse == pytest.approx(math.sqrt(squared / count), rel=1e-4)
    assert report.input_rmse == pytest.approx(math.sqrt(squared_input / count), rel=1e-6)
    assert [p.name for p in report.pages] == ["a", "b", "c"]
    assert len(worst) == 2 and worst[0][0].rmse >= worst[1][0].rmse >= min(p.rmse for p in report.pages)


def test_evaluate_command_writes_json_and_a_sheet(pairs_dir, tiny_model_path, tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--dirty", str(pairs_dir / "dirty"), "--clean",
                                      str(pairs_dir / "clean"), "--model", str(tiny_model_path), "--json",
                                      str(tmp_path / "r.json"), "--sheet", str(tmp_path / "s.png"), "--worst", "2"])
    assert result.exit_code == 0, result.output
    assert "RMSE" in result.stdout and "(pooled)" in result.stdout
    figures = json.loads((tmp_path / "r.json").read_text())
    assert figures["pages"] == 3 and len(figures["per_page"]) == 3
    assert 0 < figures["input_rmse"] < 1 and 0 < figures["rmse"] < 1
    sheet = cv2.imread(str(tmp_path / "s.png"))
    assert sheet.shape[0] == 2 * (360 + 4)  # two rows of 360-pixel panels with their borders


def test_evaluate_command_lists_bad_pairs(pairs_dir, tiny_model_path):
    (pairs_dir / "clean" / "b.png").unlink()
    (pairs_dir / "dirty" / "c.png").write_bytes(b"not an image")
    result = CliRunner().invoke(app, ["evaluate", "--dirty", str(pairs_dir / "dirty"), "--clean",
                                      str(pairs_dir / "clean"), "--model", str(tiny_model_path)])
    assert result.exit_code == 2
    assert "b.png: no clean partner" in result.stderr and "Traceback" not in result.output
