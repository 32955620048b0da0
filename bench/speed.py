"""cleandoc against unpaper on the same generated A4 pages, in one run, printed as a Markdown table.

    python bench/speed.py [--pages 8] [--model default --model my.safetensors ...] [--huge 0] [--device cpu]
                          [--precision auto]

Both tools clean the same folder of rendered A4 pages at 300 dpi (2480×3508, `cleandoc synth`, seed 7), each
as its own process: `cleandoc clean DIR -o OUT` once per model for the whole folder (start-up amortised over
the pages, PNG in and out) and `unpaper` with its default settings once per page (PNG in, its native PGM out),
as a user would run them. Reported: seconds per page, pages per second, the ratio cleandoc/unpaper, each
process's peak resident memory, and the validation RMSE each model file records. cleandoc's start-up (importing
torch, loading the model: seconds, timed by cleaning one 64×64 page) is also reported, with the time per page
and the ratio once it is taken out, which is what a folder of hundreds of pages sees. `--huge N` also cleans one
N×N page (e.g. 20000) with the first model and reports its time and peak memory. Below the table: the seconds
of one core that reading and decoding a page, and encoding and writing its cleaned version, take (the work of
cleandoc's worker threads beside the model), and the pages per second that this many threads can feed at most.
Timings vary with the load of the machine: compare the ratios, which come from one run. With --write FILE the
table replaces this script's section of FILE (docs/benchmarks.md), stamped with the commit, date, CPU and torch
version.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from docs_section import replace_section, stamp

from cleandoc.api import Cleaner
from cleandoc.clean import default_workers
from cleandoc.imageio import read_gray, write_page
from cleandoc.runtime import PRECISIONS
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


def cleandoc_command(source: Path, out: Path, model: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "cleandoc", "clean", str(source), "-o", str(out), "-q", "--device", args.device,
            "--precision", args.precision, "--model", model]


def huge_page(side: int, tile_from: Path, path: Path) -> None:
    """A side×side gray PNG made by repeating a rendered page (written row band by row band, then encoded)."""
    tile = cv2.imread(str(tile_from), cv2.IMREAD_GRAYSCALE)
    page = np.empty((side, side), np.uint8)
    for y in range(0, side, tile.shape[0]):
        for x in range(0, side, tile.shape[1]):
            block = page[y:y + tile.shape[0], x:x + tile.shape[1]]
            block[...] = tile[:block.shape[0], :block.shape[1]]
    cv2.imwrite(str(path), page)


def codec_seconds(sources: list[Path], cleaned: Path, scratch: Path) -> tuple[float, float]:
    """Median seconds of one core to read and decode a page, and to encode and write its cleaned version (found
    under the same name in `cleaned`), with the functions cleandoc's worker threads run."""
    scratch.mkdir()
    reads, writes = [], []
    for source in sources:
        started = time.perf_counter()
        read_gray(source)
        reads.append(time.perf_counter() - started)
        page = read_gray(cleaned / source.name)
        started = time.perf_counter()
        write_page(scratch / source.name, page)
        writes.append(time.perf_counter() - started)
    return statistics.median(reads), statistics.median(writes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=8, help="A4 pages to clean (default 8)")
    parser.add_argument("--model", action="append", default=None,
                        help="a model file or shipped model name, repeatable (default: the shipped model)")
    parser.add_argument("--huge", type=int, default=0, metavar="N", help="also clean one N×N page (0: skip)")
    parser.add_argument("--device", default="cpu", help="cleandoc's --device (default cpu)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="cleandoc's --precision")
    parser.add_argument("--write", type=Path, metavar="FILE", help="also write the table into FILE's section")
    args = parser.parse_args()
    models = args.model or ["default"]
    dtype = Cleaner.load(models[0], args.device, args.precision).dtype  # what cleandoc will run in
    unpaper = shutil.which("unpaper")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        synth_pages(folder / "a4", args.pages, dpi=300, seed=7)
        pages = sorted((folder / "a4" / "dirty").glob("*.png"))
        tiny = folder / "tiny" / "page.png"
        tiny.parent.mkdir()
        cv2.imwrite(str(tiny), cv2.imread(str(pages[0]), cv2.IMREAD_GRAYSCALE)[:64, :64])
        for index, name in enumerate(models):
            _, info = load_model(name)
            val = info.figures.get("val_rmse")
            startup, _ = timed(cleandoc_command(tiny, folder / f"tiny{index}", name, args))
            seconds, rss = timed(cleandoc_command(folder / "a4" / "dirty", folder / f"out{index}", name, args))
            rows.append((f"cleandoc clean --model {name} ({info.config['arch']} "
                         f"{'-'.join(map(str, info.config.get('widths', [])))})", seconds / len(pages), rss,
                         "n/a" if val is None else f"{val:.4f}", startup, (seconds - startup) / len(pages)))
        decode, encode = codec_seconds(pages, folder / "out0", folder / "codec")
        if unpaper:
            (folder / "unpaper").mkdir()
            total, peak = 0.0, 0.0
            for page in pages:
                seconds, rss = timed([unpaper, "--quiet", str(page), str(folder / "unpaper" / f"{page.stem}.pgm")])
                total, peak = total + seconds, max(peak, rss)
            rows.append(("unpaper, default settings (PNG → PGM)", total / len(pages), peak, "n/a", None, None))
        if args.huge:
            huge_page(args.huge, pages[0], folder / "huge.png")
            seconds, rss = timed(cleandoc_command(folder / "huge.png", folder / "huge-out", models[0], args))
            huge = (f"cleandoc clean --model {models[0]}, one {args.huge}×{args.huge} page "
                    f"({args.huge ** 2 / 1e6:.0f} MP)", seconds, rss)

    unpaper_seconds = rows[-1][1] if unpaper else None
    lines = [f"| {args.pages} A4 300-dpi pages, PNG in and out | s per page | pages per s | ratio to unpaper "
             "| start-up, s | s per page after start-up | its ratio | peak RSS, MB | validation RMSE |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def ratio(seconds: float | None) -> str:
        return f"{seconds / unpaper_seconds:.2f}" if unpaper_seconds and seconds is not None else "n/a"

    for name, seconds, rss, val, startup, after in rows:
        startup_cells = "| | | |" if startup is None else f"| {startup:.2f} | {after:.2f} | {ratio(after)} |"
        lines.append(f"| {name} | {seconds:.2f} | {1 / seconds:.3f} | {ratio(seconds)} {startup_cells} {rss:.0f} "
                     f"| {val} |")
    if args.huge:
        name, seconds, rss = huge
        lines.append(f"| {name} | {seconds:.1f} (whole page) | | | | | | {rss:.0f} | |")
    workers = default_workers()
    lines += ["", f"PNG codecs, one core per page: read + decode {decode:.3f} s, encode + write {encode:.3f} s; "
                  f"cleandoc's {workers} worker threads here (one per core) feed at most "
                  f"{workers / (decode + encode):.1f} pages per s, whatever the model."]
    if not unpaper:
        lines += ["", "(unpaper not found: install it, e.g. `apt-get install unpaper`, for the comparison)"]
    header = (f"Measured with `python bench/speed.py {' '.join(sys.argv[1:])}` ({stamp()}; cleandoc on "
              f"{args.device} in {dtype or torch.float32}, --precision {args.precision}).")
    print("\n" + header + "\n\n" + "\n".join(lines))
    if args.write:
        replace_section(args.write, "speed.py", header + "\n\n" + "\n".join(lines))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
