"""cleandoc against unpaper on the same generated A4 pages, in one run, printed as a Markdown table.

    python bench/speed.py [--pages 4] [--model M] [--huge 0]

Both tools clean the same folder of rendered A4 pages at 300 dpi (2480×3508, `cleandoc synth`, seed 7), each
as its own process: `cleandoc clean DIR -o OUT` once for the whole folder (start-up amortised over the pages,
PNG in and out) and `unpaper` with its default settings once per page (PNG in, its native PGM out), as a user
would run them. Reported: seconds per page, pages per second, the ratio cleandoc/unpaper, each process's peak
resident memory, and the validation RMSE the model file records. `--huge N` also cleans one N×N page (e.g.
20000) and reports its time and peak memory. Timings vary with the load of the machine: compare the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cleandoc.store import load_model
from cleandoc.synth import synth_pages


def timed(command: list[str]) -> tuple[float, float]:
    """Run a command to completion; (wall seconds, peak RSS in MB) of its process."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)  # wait4: this child's own peak memory
        seconds = time.perf_counter() - started
        if (code := os.waitstatus_to_exitcode(status)) != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(command)} failed ({code}):\n{errors.read().decode(errors='replace')}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KB on Linux


def cleandoc_command(source: Path, out: Path, model: Path | None) -> list[str]:
    command = [sys.executable, "-m", "cleandoc", "clean", str(source), "-o", str(out), "-q", "--device", "cpu"]
    return command + (["--model", str(model)] if model else [])


def huge_page(side: int, tile_from: Path, path: Path) -> None:
    """A side×side gray PNG made by repeating a rendered page (written row band by row band, then encoded)."""
    tile = cv2.imread(str(tile_from), cv2.IMREAD_GRAYSCALE)
    page = np.empty((side, side), np.uint8)
    for y in range(0, side, tile.shape[0]):
        for x in range(0, side, tile.shape[1]):
            block = page[y:y + tile.shape[0], x:x + tile.shape[1]]
            block[...] = tile[:block.shape[0], :block.shape[1]]
    cv2.imwrite(str(path), page)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=4, help="A4 pages to clean (default 4)")
    parser.add_argument("--model", type=Path, default=None, help="model file (default: the shipped model)")
    parser.add_argument("--huge", type=int, default=0, metavar="N", help="also clean one N×N page (0: skip)")
    args = parser.parse_args()
    model = load_model(args.model)
    val = model.info.get("val_rmse")
    print(f"model: {model.source} ({model.config['arch']} {model.config.get('widths')}), validation RMSE "
          f"{'n/a' if val is None else f'{val:.4f}'} (as recorded in the file)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    unpaper = shutil.which("unpaper")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        synth_pages(folder / "a4", args.pages, dpi=300, seed=7)
        pages = sorted((folder / "a4" / "dirty").glob("*.png"))
        seconds, rss = timed(cleandoc_command(folder / "a4" / "dirty", folder / "cleandoc", args.model))
        rows.append(("cleandoc clean (folder, PNG → PNG)", seconds / len(pages), rss))
        if unpaper:
            (folder / "unpaper").mkdir()
            total, peak = 0.0, 0.0
            for page in pages:
                seconds, rss = timed([unpaper, "--quiet", str(page), str(folder / "unpaper" / f"{page.stem}.pgm")])
                total, peak = total + seconds, max(peak, rss)
            rows.append(("unpaper, default settings (PNG → PGM)", total / len(pages), peak))
        if args.huge:
            huge_page(args.huge, pages[0], folder / "huge.png")
            seconds, rss = timed(cleandoc_command(folder / "huge.png", folder / "huge-out", args.model))
            huge = (f"cleandoc clean, one {args.huge}×{args.huge} page ({args.huge ** 2 / 1e6:.0f} MP)", seconds, rss)

    unpaper_seconds = rows[1][1] if unpaper else None
    print()
    print(f"| {args.pages} A4 300-dpi pages | s per page | pages per s | ratio to unpaper | peak RSS, MB |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds, rss in rows:
        ratio = f"{seconds / unpaper_seconds:.2f}" if unpaper_seconds else "n/a"
        print(f"| {name} | {seconds:.2f} | {1 / seconds:.3f} | {ratio} | {rss:.0f} |")
    if args.huge:
        name, seconds, rss = huge
        print(f"| {name} | {seconds:.1f} (whole page) | | | {rss:.0f} |")
    if not unpaper:
        print("\n(unpaper not found: install it, e.g. `apt-get install unpaper`, for the comparison)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
