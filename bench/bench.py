"""Quality and speed of a model, next to doing nothing, printed as a Markdown table.

    python bench/bench.py [--model M] [--data ../shared/data/noisyoffice-kaggle] [--repeats 3] [--device cpu]

Quality: pooled RMSE, mean PSNR and SSIM on the validation page groups of the shared NoisyOffice pairs, split
exactly as the model's training run split them (fraction and seed from the model file; skipped when the data
is absent), with the share of the squared error that lies on or next to the ink, and pooled RMSE on --synth
rendered pages at --dpi with random degradations. Speed: seconds to clean one A4 page at 300 dpi (2480×3508),
model only and end to end (read PNG, clean, write PNG), median of --repeats runs in this process, on --device
(this machine's CPU unless told; `cuda` for a GPU).

    python bench/bench.py --compare A.safetensors B.safetensors ...

scores several models side by side on the validation split (the table of what each training recipe is worth),
with each one's multiply-adds per pixel and seconds per A4 page (the accuracy-for-speed trade-off).
--precision (auto, fp32, fp16, bf16) is the arithmetic of every figure, as `cleandoc clean --precision`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cleandoc.clean import CleanOptions, clean_pages
from cleandoc.data import find_pairs, load_pairs, page_groups, split_by_group
from cleandoc.evaluate import evaluate
from cleandoc.files import Job
from cleandoc.metrics import squared_error
from cleandoc.models import count_parameters, multiply_adds_per_pixel
from cleandoc.store import load_model
from cleandoc.synth import synth_pages
from cleandoc.tiling import PRECISIONS, autocast_dtype, pick_device, run

A4_300DPI = (3508, 2480)  # height, width
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "noisyoffice-kaggle"


def a4_page(data: Path) -> np.ndarray:
    """An A4 page made by tiling real dirty pages when the data is there, else a synthetic text-like page."""
    dirty = sorted((data / "train").glob("*.png"))
    height, width = A4_300DPI
    if dirty:
        tiles = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in dirty[:12]]
        rows = [np.hstack([tiles[(r * 5 + c) % len(tiles)][:258] for c in range(5)]) for r in range(14)]
        return (np.vstack(rows)[:height, :width].astype(np.float32) / 255)
    rng = np.random.default_rng(0)
    page = np.full((height, width), 0.9, np.float32)
    for y in range(200, height - 200, 60):
        for x in range(200, width - 200, 40):
            if rng.random() < 0.8:
                page[y:y + 30, x:x + 25] = rng.uniform(0.1, 0.3)
    return page


def validation_report(model: torch.nn.Module, data: Path, dtype: torch.dtype | None, device: torch.device):
    """The model's scores on the validation page groups of its own training split (fraction and seed from
    the model file), a line saying which pages those are, and every page as (score, dirty, cleaned, clean)."""
    options = model.info.get("options", {})
    fraction = float(model.info.get("data", {}).get("val_fraction", 0.2))
    seed = int(options.get("seed", 0))
    pairs = find_pairs(data / "train", data / "train_cleaned")
    groups = page_groups([clean for _, clean in load_pairs(pairs)])
    _, val = split_by_group(groups, fraction, seed)
    report, pages = evaluate([pairs[i] for i in val], model, device, dtype=dtype, worst=len(val))
    n_groups = len({groups[i] for i in val})
    where = f"{len(val)} pages, {n_groups} page groups never trained on (fraction {fraction}, seed {seed})"
    return report, where, pages


def error_near_ink(pages: list[tuple]) -> tuple[float, float, float]:
    """For pages as `evaluate` keeps them, (score, dirty, cleaned, clean): the share of the squared error that
    lies on ink or within 2 px of it (target < 0.5, dilated), for doing nothing and for the model, and the
    share of pixels there: where a better model has to spend its effort."""
    near_pixels = total_pixels = 0
    near, total = np.zeros(2), np.zeros(2)
    for _, dirty, cleaned, clean in pages:
        ink = cv2.dilate((clean < 0.5).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        near_pixels, total_pixels = near_pixels + ink.sum(), total_pixels + ink.size
        for i, page in enumerate((dirty, cleaned)):
            near[i] += squared_error(page[ink], clean[ink])
            total[i] += squared_error(page, clean)
    return near[0] / total[0], near[1] / total[1], near_pixels / total_pixels


def quality(model: torch.nn.Module, data: Path, dtype: torch.dtype | None,
            device: torch.device) -> list[tuple[str, str, str]]:
    report, where, pages = validation_report(model, data, dtype, device)
    before, after, pixels = error_near_ink(pages)
    return [
        ("pooled RMSE (lower is better)", f"{report.input_rmse:.4f}", f"{report.rmse:.4f}"),
        ("mean PSNR, dB", f"{report.mean('input_psnr'):.2f}", f"{report.mean('psnr'):.2f}"),
        ("mean SSIM", f"{report.mean('input_ssim'):.4f}", f"{report.mean('ssim'):.4f}"),
        (f"share of the squared error on ink or within 2 px of it ({pixels:.0%} of the pixels)", f"{before:.0%}",
         f"{after:.0%}"),
        (f"validation split: {where}", "", ""),
    ]


def recipe(model: torch.nn.Module) -> str:
    """How a model was trained, in a few words, from its file's metadata."""
    options = model.info.get("options", {})
    clean_only = str(model.info.get("data", {}).get("dirty", "")).startswith("none")
    parts = ["clean pages only" if clean_only else "real pairs"]
    if options.get("noise"):
        share = "" if clean_only else f"{options.get('synthetic_fraction', 0):.0%} "
        parts.append(f"{share}synthetic ({' + '.join(options['noise'])})")
    parts.append(f"weight decay {options.get('weight_decay', 0):g}")
    if options.get("contractive"):
        parts.append(f"contractive {options['contractive']:g}")
    return ", ".join(parts)


def compare(paths: list[Path], data: Path, dtype: torch.dtype | None, repeats: int, device: torch.device) -> None:
    """One row per model, all scored on the validation split their files name (it must be the same), with
    each model's arithmetic and time per A4 page on the device: the trade-off between accuracy and speed."""
    print("| model | trained on | best epoch of epochs × patches | validation RMSE | mean PSNR, dB | mean SSIM "
          f"| multiply-adds per pixel | {where_timed(device)} s per A4 page, model only |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    splits = set()
    page = a4_page(data)
    for index, path in enumerate(paths):
        model = load_model(path, device)
        report, where, _ = validation_report(model, data, dtype, device)
        splits.add(where)
        if index == 0:
            print(f"| do nothing | | | {report.input_rmse:.4f} | {report.mean('input_psnr'):.2f} | "
                  f"{report.mean('input_ssim'):.4f} | 0 | 0 |")
        options = model.info.get("options", {})
        budget = (f"{model.info.get('best_epoch', '?')} of {options.get('epochs', '?')} × "
                  f"{options.get('patches_per_epoch', '?')}")
        print(f"| {path.name} | {recipe(model)} | {budget} | {report.rmse:.4f} | {report.mean('psnr'):.2f} | "
              f"{report.mean('ssim'):.4f} | {multiply_adds_per_pixel(model):,.0f} | "
              f"{model_seconds(model, page, repeats, dtype, device):.2f} |", flush=True)
    print(f"\nvalidation: {' / '.join(sorted(splits))}")


def where_timed(device: torch.device) -> str:
    """The device's kind as the tables name it."""
    return "CPU" if device.type == "cpu" else "GPU"


def model_seconds(model: torch.nn.Module, page: np.ndarray, repeats: int, dtype: torch.dtype | None,
                  device: torch.device) -> float:
    """Median seconds of `repeats` runs of the network over the page, after a warm-up on a corner (the result
    comes back to the CPU, so a GPU has finished when the clock stops)."""
    run(model, page[:512, :512], dtype=dtype, device=device)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run(model, page, dtype=dtype, device=device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def synthetic(model: torch.nn.Module, pages: int, dpi: int, dtype: torch.dtype | None,
              device: torch.device) -> list[tuple[str, str, str]]:
    """Quality on rendered pages with random document degradations (`cleandoc synth`): text at 300 dpi is
    about three times larger than in the NoisyOffice pages, so this shows whether the model generalises."""
    with tempfile.TemporaryDirectory() as folder:
        synth_pages(Path(folder), pages, dpi=dpi, seed=2024)
        report, _ = evaluate(find_pairs(Path(folder) / "dirty", Path(folder) / "clean"), model, device, dtype=dtype)
    return [(f"pooled RMSE on {pages} synthetic A4 pages at {dpi} dpi (cleandoc synth, seed 2024)",
             f"{report.input_rmse:.4f}", f"{report.rmse:.4f}")]


def speed(model: torch.nn.Module, page: np.ndarray, repeats: int, dtype: torch.dtype | None,
          device: torch.device) -> list[tuple[str, str, str]]:
    model_only = model_seconds(model, page, repeats, dtype, device)
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "a4.png"
        cv2.imwrite(str(source), np.rint(page * 255).astype(np.uint8))
        end_to_end = []
        for i in range(repeats):
            job = Job(source, Path(folder) / f"out{i}.png")
            started = time.perf_counter()
            [result] = clean_pages([job], model, CleanOptions(dtype=dtype), device).results
            end_to_end.append(time.perf_counter() - started)
            assert result.status == "cleaned", result.reason
        started = time.perf_counter()
        cv2.imwrite(str(Path(folder) / "copy.png"), cv2.imread(str(source), cv2.IMREAD_GRAYSCALE))
        io_only = time.perf_counter() - started
    return [
        (f"{where_timed(device)} s per A4 300-dpi page, model only", "0", f"{model_only:.2f}"),
        (f"{where_timed(device)} s per A4 300-dpi page, read + clean + write PNG", f"{io_only:.2f}",
         f"{statistics.median(end_to_end):.2f}"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NoisyOffice Kaggle folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synth", type=int, default=3, metavar="N", help="synthetic pages to score (0: none)")
    parser.add_argument("--dpi", type=int, default=300, help="resolution of the synthetic pages")
    parser.add_argument("--compare", type=Path, nargs="+", metavar="MODEL",
                        help="only score these models side by side on the validation split, one row each")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="as cleandoc clean --precision")
    parser.add_argument("--device", default="cpu", help="as cleandoc clean --device (default cpu)")
    args = parser.parse_args()
    try:
        device = pick_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))
    dtype = autocast_dtype(args.precision, device)
    print(f"precision: {args.precision} ({dtype or torch.float32}) on {device}")
    if args.compare:
        if not (args.data / "train").is_dir():
            print(f"no data at {args.data}: nothing to compare on")
            return 0
        compare(args.compare, args.data, dtype, args.repeats, device)
        return 0
    model = load_model(args.model, device)
    print(f"model: {model.source} ({model.config['arch']}, {count_parameters(model):,} parameters, "
          f"receptive radius {model.receptive_radius} px)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    rows = []
    if (args.data / "train").is_dir():
        rows += quality(model, args.data, dtype, device)
    else:
        print(f"(quality skipped: no data at {args.data})")
    if args.synth:
        rows += synthetic(model, args.synth, args.dpi, dtype, device)
    rows += speed(model, a4_page(args.data), args.repeats, dtype, device)
    print()
    print("| figure | do nothing | cleandoc |")
    print("|---|---:|---:|")
    for name, baseline, ours in rows:
        print(f"| {name} | {baseline} | {ours} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
