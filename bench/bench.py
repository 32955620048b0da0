"""What a model is worth, beside doing nothing, Otsu and Sauvola: one Markdown table per model.

    python bench/bench.py [--model M ...] [--sealed] [--write docs/benchmarks.md]

Rows, each on pages held out from the model's training:
- NoisyOffice-style pages: pooled RMSE on the page groups the model's training run held out for validation
  (found from its file), or with --sealed on its sealed groups (score those once per model that ships);
- DIBCO: F-measure, PSNR and DRD of the binarised output on a whole contest year (--dibco-year, 2016; with
  --sealed, --sealed-year, 2011), which must not be among the model's training sources;
- faint ink: the share of ink pixels kept (darker than half after cleaning) on clean pages made faint at each
  contrast (`noise.faint_ink`: toned, unevenly lit paper, mild blur and noise): printed pages (rendered ones and
  the validation pages' clean targets) and handwritten ones (the DIBCO year's ground truth);
- figures: the share of dark pixels kept in charts, photographs, hatched drawings, stamps and ruled tables, on
  rendered pages of figures, pooled and on the worst page;
- scale: the F-measure on rendered pages at 100 to 600 dpi with faint ink and random degradations;
- PDF: the bytes of a scanned PDF and of its cleaned versions, grey and binarised;
- speed: CPU seconds to clean an A4 page at 300 dpi, the network alone, median of --repeats;
- OCR, in a table of its own: Tesseract's character error rate on the held-out NoisyOffice pages and the DIBCO
  year's printed pages, beside doing nothing and unpaper with OCRmyPDF's --clean settings.
The data come from --data (../shared/data; absent, those rows say so). With --write FILE the tables replace this
script's section of FILE (docs/benchmarks.md), stamped with the commit, date, CPU and torch version.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from docs_section import replace_section, stamp

from cleandoc.api import Cleaner
from cleandoc.data import Pair, PairingError, find_pairs, held_out_pairs, load_pairs, page_groups
from cleandoc.evaluate import BINARY_METHODS, evaluate_binary
from cleandoc.imageio import read_page, to_uint8, to_unit_float
from cleandoc.metrics import CLASSIC_BINARISERS, classic_binary, dibco_scores, ink_kept, squared_error
from cleandoc.models import multiply_adds_per_pixel
from cleandoc.noise import DEFAULT_STRENGTH, corrupt, faint, faint_ink, random_recipe
from cleandoc.ocr import OCR_METHODS, OcrError, score_ocr
from cleandoc.runtime import PRECISIONS
from cleandoc.store import ModelFileError
from cleandoc.synth import FIGURE_KINDS, render_page, toned_figures

A4_300DPI = (3508, 2480)  # height, width
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONTRASTS = (0.2, 0.25, 0.3, 0.4, 0.6, 0.8, 1.0)
STROKE_CORE = 0.2  # a clean page's pixels darker than this are a stroke's core, not its anti-aliased edge
CORE_CONTRAST = 0.25  # the faintest contrast the shipped model's bars hold: where the cores are counted too
SCALE_DPI = (100, 200, 300, 600)
FIGURE_PAGES = 10
RENDER_SEED = 2024  # rendered benchmark pages; training pages are rendered with other seeds
COLUMNS = BINARY_METHODS


def a4_page(data: Path) -> np.ndarray:
    """An A4 page made by tiling real dirty pages when the data is there, else a synthetic text-like page."""
    dirty = sorted((data / "train").glob("*.png"))
    height, width = A4_300DPI
    if dirty:
        tiles = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in dirty[:12]]
        rows = [np.hstack([tiles[(r * 5 + c) % len(tiles)][:258] for c in range(5)]) for r in range(14)]
        return np.vstack(rows)[:height, :width]
    return to_uint8(render_page(np.random.default_rng(RENDER_SEED), 300))


class Bench:
    """One model's figures, with the pages of every column: the dirty page itself (doing nothing), the classic
    binarisers' and cleandoc's (as `cleandoc clean` writes it, 8-bit)."""

    def __init__(self, cleaner: Cleaner, data: Path):
        self.cleaner, self.data = cleaner, data
        self.info = cleaner.info.provenance
        self._office: dict[str, list[Pair] | PairingError] = {}

    def office_pairs(self, part: str) -> list[Pair]:
        """The NoisyOffice-style pairs the model's run held out (`part`: val or sealed), found once: finding them
        reads every training page to split it as the run did. PairingError when the data is not there."""
        if part not in self._office:
            try:
                self._office[part] = [p for p in held_out_pairs(self.info, part) if "dibco" not in str(p.dirty)]
            except PairingError as exc:
                self._office[part] = exc
        if isinstance(self._office[part], PairingError):
            raise self._office[part]
        return self._office[part]

    def outputs(self, dirty: np.ndarray, binary: bool = False) -> dict[str, np.ndarray]:
        """Each column's page; with `binary`, cleandoc's is the one `--binarize` thresholds."""
        return {"do nothing": dirty, **{m: classic_binary(dirty, m) for m in CLASSIC_BINARISERS},
                "cleandoc": self.cleaner.run(dirty, binary=binary)}


def noisyoffice_rows(bench: Bench, part: str) -> list[tuple]:
    """Pooled RMSE on the pairs the model's run held out (`part`: val or sealed); binarisers' pages scored too."""
    try:
        pairs = bench.office_pairs(part)
    except PairingError as exc:
        return [(f"NoisyOffice-style pages ({part}): data not found ({exc.problems[0]})",)]
    if not pairs:
        return []
    squared = dict.fromkeys(COLUMNS, 0.0)
    pixels = 0
    for pair in pairs:
        dirty, clean = load_pairs([pair])[0]
        for method, page in bench.outputs(to_uint8(dirty)).items():
            squared[method] += squared_error(to_unit_float(page), clean)
        pixels += clean.size
    name = "validation" if part == "val" else "sealed"
    return [(f"NoisyOffice-style pages: pooled RMSE on {len(pairs)} {name} pages (lower is better)",
             *(f"{(squared[m] / pixels) ** 0.5:.4f}" for m in COLUMNS))]


def dibco_rows(bench: Bench, year: str) -> list[tuple]:
    folder = bench.data / "dibco" / year
    if not folder.is_dir():
        return [(f"DIBCO {year}: data not found at {folder}",)]
    trained_on = [s for s in (bench.info.get("data") or {}).get("sources", [])
                  if s.get("use") != "validation" and Path(str(s.get("dirty"))).parent.name == year]
    if trained_on:
        return [(f"DIBCO {year}: not held out (the model trained on it)",)]
    pairs = find_pairs(folder / "original", folder / "gt")
    report = evaluate_binary(pairs, bench.cleaner)
    means = {m: report.mean(m) for m in BINARY_METHODS}
    label = f"DIBCO {year} ({len(pairs)} pages), binarised"
    return [(f"{label}: F-measure, % (higher is better)", *(f"{means[m][0]:.2f}" for m in COLUMNS)),
            (f"{label}: PSNR, dB (higher is better)", *(f"{means[m][1]:.2f}" for m in COLUMNS)),
            (f"{label}: DRD (lower is better)", *(f"{means[m][2]:.2f}" for m in COLUMNS))]


def faint_pages(bench: Bench, year: str) -> dict[str, list[np.ndarray]]:
    """Clean pages to make faint, as float pages in [0, 1], by kind: printed (three rendered pages at 150, 200
    and 300 dpi, and the clean targets of the model's validation pages) and handwritten (the DIBCO year's ground
    truth, whose strokes are thick: kept apart so that they do not hide losses on small print)."""
    printed = [render_page(np.random.default_rng([RENDER_SEED, dpi]), dpi, (148, 210)) for dpi in (150, 200, 300)]
    try:
        targets = [read_page(p.clean) for p in bench.office_pairs("val")]
    except PairingError:
        targets = []
    groups = page_groups(targets)  # a page group's pages share their target: make it faint once
    printed += [targets[groups.index(group)] for group in sorted(set(groups))]
    gt = bench.data / "dibco" / year / "gt"
    return {"printed": printed, "handwritten": [read_page(path) for path in sorted(gt.glob("*.png"))]}


def faint_rows(bench: Bench, kinds: dict[str, list[np.ndarray]]) -> list[tuple]:
    """The share of ink pixels (target darker than half) kept, per kind and contrast; for printed ink, also on
    cleandoc's binarised page (`--binarize`), and at the CORE_CONTRAST the share of the strokes' cores (darker
    than STROKE_CORE) kept, which tells strokes that thin (their soft edges lost) from strokes that vanish."""
    rows = []
    for kind, pages in kinds.items():
        for contrast in CONTRASTS if kind == "printed" else (0.25,):
            darker_than = {"ink": 0.5}
            if kind == "printed" and contrast == CORE_CONTRAST:
                darker_than["core"] = STROKE_CORE
            kept = {name: dict.fromkeys(COLUMNS, 0.0) for name in darker_than}
            ink = dict.fromkeys(darker_than, 0)
            binarised = 0.0
            for index, page in enumerate(pages):
                rng = np.random.default_rng([RENDER_SEED, index, round(contrast * 100)])
                dirty = to_uint8(faint_ink(page, contrast, rng))
                outputs = bench.outputs(dirty)
                if kind == "printed":
                    ink_mask = page < darker_than["ink"]
                    binarised += ink_kept(bench.cleaner.run(dirty, binary=True), ink_mask) * ink_mask.sum()
                for name, threshold in darker_than.items():
                    mask = page < threshold
                    for method, out in outputs.items():
                        kept[name][method] += ink_kept(out, mask) * mask.sum()
                    ink[name] += int(mask.sum())
            if not pages:
                continue
            rows.append((f"faint {kind} ink at contrast {contrast:g}: share of ink pixels kept, {len(pages)} "
                         "pages (higher is better)", *(f"{kept['ink'][m] / ink['ink']:.1%}" for m in COLUMNS)))
            if kind == "printed":
                rows.append((f"faint {kind} ink at contrast {contrast:g}: share of ink pixels kept on cleandoc's "
                             "binarised page (`--binarize`)", *("" for _ in COLUMNS[:-1]),
                             f"{binarised / ink['ink']:.1%}"))
            if "core" in darker_than:
                rows.append((f"faint {kind} ink at contrast {contrast:g}: share of the strokes' core pixels (darker "
                             f"than {STROKE_CORE:g} on the clean page) kept (higher is better)",
                             *(f"{kept['core'][m] / ink['core']:.1%}" for m in COLUMNS)))
    return rows


def scale_rows(bench: Bench) -> list[tuple]:
    rows = []
    for dpi in SCALE_DPI:
        scores = {m: [] for m in COLUMNS}
        for index in range(2):
            rng = np.random.default_rng([RENDER_SEED, 7, dpi, index])
            clean = render_page(rng, dpi, (105, 148))
            dirty = to_uint8(corrupt(faint(clean, DEFAULT_STRENGTH["faint"], rng), random_recipe(rng), rng))
            for method, out in bench.outputs(dirty, binary=True).items():
                scores[method].append(dibco_scores(out, clean)[0])
        rows.append((f"rendered pages at {dpi} dpi, faint ink and random degradations: F-measure, % (2 A6 pages)",
                     *(f"{np.mean(scores[m]):.2f}" for m in COLUMNS)))
    return rows


def figure_rows(bench: Bench) -> list[tuple]:
    """Content that is not text, on FIGURE_PAGES rendered pages of figures at 150 dpi, lightly toned and unevenly
    lit: per kind, the share of its dark pixels (darker than half on the clean page) each column keeps, pooled over
    the pages and on the worst page, and on cleandoc's binarised page; a cleaner that whitens part of a drawing or a
    photograph shows on its worst page before it shows in the pool."""
    kept = {kind: {m: [] for m in (*COLUMNS, "binarised")} for kind in FIGURE_KINDS}
    dark = {kind: [] for kind in FIGURE_KINDS}
    for index in range(FIGURE_PAGES):
        clean, dirty, regions = toned_figures(np.random.default_rng([RENDER_SEED, 13, index]),
                                              np.random.default_rng([RENDER_SEED, 14, index]))
        outputs = bench.outputs(dirty) | {"binarised": bench.cleaner.run(dirty, binary=True)}
        for kind, region in regions.items():
            mask = clean[region] < 0.5
            dark[kind].append(int(mask.sum()))
            for method, out in outputs.items():
                kept[kind][method].append(ink_kept(out[region], mask))
    def pooled_and_worst(kind: str, method: str) -> str:
        shares = kept[kind][method]
        return f"{np.average(shares, weights=dark[kind]):.1%} ({min(shares):.1%})"

    rows = []
    for kind in FIGURE_KINDS:
        rows.append((f"figures, {kind}: share of its dark pixels kept, pooled (worst page) over {FIGURE_PAGES} A5 "
                     "pages at 150 dpi (higher is better)", *(pooled_and_worst(kind, m) for m in COLUMNS)))
        rows.append((f"figures, {kind}: the same on cleandoc's binarised page (`--binarize`)",
                     *("" for _ in COLUMNS[:-1]), pooled_and_worst(kind, "binarised")))
    return rows


def model_seconds(cleaner: Cleaner, page: np.ndarray, repeats: int) -> float:
    """Median seconds of `repeats` runs of the network over the page, after a warm-up on a corner (the result
    comes back to the CPU, so a GPU has finished when the clock stops)."""
    cleaner.run(page[:512, :512])
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        cleaner.run(page)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def classic_seconds(page: np.ndarray, method: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        classic_binary(page, method)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def speed_rows(bench: Bench, repeats: int) -> list[tuple]:
    page = a4_page(bench.data / "noisyoffice-kaggle")
    where = "CPU" if bench.cleaner.device.type == "cpu" else "GPU"
    return [(f"{where} s per A4 300-dpi page (median of {repeats})", "0",
             *(f"{classic_seconds(page, m, repeats):.2f}" for m in CLASSIC_BINARISERS),
             f"{model_seconds(bench.cleaner, page, repeats):.2f}")]


def ocr_rows(bench: Bench, part: str, year: str) -> list[tuple]:
    """Tesseract's character error rate on the held-out NoisyOffice pages and the DIBCO year's printed pages,
    each beside doing nothing and unpaper with OCRmyPDF's --clean settings (`cleandoc evaluate --ocr`)."""
    rows = []
    try:
        office = bench.office_pairs(part)
    except PairingError:
        office = []
    folder = bench.data / "dibco" / year
    printed = [p for p in find_pairs(folder / "original", folder / "gt") if p.name.startswith("P")] \
        if folder.is_dir() else []
    for label, pairs in ((f"NoisyOffice-style pages ({len(office)})", office),
                         (f"DIBCO {year} printed pages ({len(printed)})", printed)):
        if not pairs:
            continue
        try:
            report = score_ocr(pairs, bench.cleaner)
        except OcrError as exc:
            return [(f"OCR: {exc}",)]
        rows.append((f"{label}: Tesseract's character error rate (lower is better)",
                     *(f"{report.cer(m):.1%}" for m in OCR_METHODS)))
    return rows


def pdf_rows(bench: Bench) -> list[tuple]:
    """Bytes of a scanned PDF (its pages as JPEG at quality 85, as scanners write them) and of what `cleandoc
    clean` makes of it, grey (lossless) and binarised (CCITT G4): rendered A4 pages at 300 dpi with faint ink and
    random degradations."""
    import img2pdf

    from cleandoc.clean import clean_document
    from cleandoc.files import Job
    from cleandoc.imageio import encode_page
    from cleandoc.options import CleanOptions

    pages = []
    for index in range(2):
        rng = np.random.default_rng([RENDER_SEED, 11, index])
        clean = render_page(rng, 300)
        pages.append(encode_page(corrupt(faint(clean, 0.5, rng), random_recipe(rng), rng), ".jpg", jpeg_quality=85))
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "scan.pdf"
        source.write_bytes(img2pdf.convert(pages, layout_fun=img2pdf.get_fixed_dpi_layout_fun((300, 300))))
        sizes = {}
        for binary in (False, True):
            out = Path(folder) / f"out-{binary}.pdf"
            result = clean_document(Job(source, out, "document"), bench.cleaner, CleanOptions(binarize=binary))
            if result.status != "cleaned":
                return [(f"PDF: {result.reason}",)]
            sizes[binary] = out.stat().st_size
        size_in = source.stat().st_size
    return [("2-page scanned PDF, A4 at 300 dpi (JPEG pages): bytes in → grey out (Flate) → binarised out (G4)",
             f"{size_in:,}", "", "", f"{sizes[False]:,} ({sizes[False] / size_in:.2f}×) → {sizes[True]:,} "
             f"({sizes[True] / size_in:.2f}×)")]


def table(name: str, cleaner: Cleaner, rows: list[tuple], columns: tuple[str, ...] = COLUMNS) -> str:
    info = cleaner.info
    head = [f"### `{name}`", "", f"`{json.dumps(info.config)}`: {info.parameters:,} parameters, "
            f"{multiply_adds_per_pixel(cleaner.model):,.0f} multiply-adds per pixel", "",
            f"| figure | {' | '.join(columns)} |", "|---|" + "---:|" * len(columns)]
    body = [f"| {row[0]} | " + (" | ".join(row[1:]) + " |" if len(row) > 1 else " |" * len(columns)) for row in rows]
    return "\n".join(head + body)


ROW_GROUPS = ("noisyoffice", "dibco", "faint", "figures", "scale", "pdf", "speed", "ocr")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=None,
                        help="a model file or shipped model name, repeatable (default: the shipped model)")
    parser.add_argument("--sealed", action="store_true",
                        help="score the sealed pages and year instead of the validation ones")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default ../shared/data)")
    parser.add_argument("--dibco-year", default="2016", help="the held-out DIBCO year (default 2016)")
    parser.add_argument("--sealed-year", default="2011", help="the sealed DIBCO year (default 2011)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", action="append", default=[], help="leave groups of rows out, repeatable or "
                        f"comma-separated: {', '.join(ROW_GROUPS)}")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="as cleandoc clean --precision (default fp32, the same arithmetic on every CPU)")
    parser.add_argument("--device", default="cpu", help="as cleandoc clean --device (default cpu)")
    parser.add_argument("--write", type=Path, metavar="FILE", help="also write the tables into FILE's section")
    args = parser.parse_args()
    args.skip = {group for item in args.skip for group in item.split(",")}
    if unknown := args.skip - set(ROW_GROUPS):
        parser.error(f"--skip: no such group of rows: {', '.join(sorted(unknown))}")
    try:
        cleaners = [(name, Cleaner.load(name, args.device, args.precision))
                    for name in args.model or ["default"]]
    except (ModelFileError, ValueError) as exc:
        parser.error(str(exc))
    year = args.sealed_year if args.sealed else args.dibco_year
    part = "sealed" if args.sealed else "val"
    tables = []
    for name, cleaner in cleaners:
        bench = Bench(cleaner, args.data)
        rows = []
        if "noisyoffice" not in args.skip:
            rows += noisyoffice_rows(bench, part)
        if "dibco" not in args.skip:
            rows += dibco_rows(bench, year)
        if "faint" not in args.skip:
            rows += faint_rows(bench, faint_pages(bench, args.dibco_year))
        if "figures" not in args.skip:
            rows += figure_rows(bench)
        if "scale" not in args.skip:
            rows += scale_rows(bench)
        if "pdf" not in args.skip:
            rows += pdf_rows(bench)
        if "speed" not in args.skip:
            rows += speed_rows(bench, args.repeats)
        tables.append(table(name, cleaner, rows))
        print(tables[-1] + "\n", flush=True)
        if "ocr" not in args.skip and (ocr := ocr_rows(bench, part, year)):
            tables.append(table(f"{name}: OCR", cleaner, ocr, OCR_METHODS).replace("### ", "#### ", 1))
            print(tables[-1] + "\n", flush=True)
    header = (f"Measured with `python bench/bench.py {' '.join(sys.argv[1:])}` ({stamp()}; {args.precision} on "
              f"{cleaners[0][1].device}). Pages held out from training: {'sealed' if args.sealed else 'validation'} "
              f"NoisyOffice page groups and DIBCO {year}.")
    print(header)
    if args.write:
        replace_section(args.write, "bench.py --sealed" if args.sealed else "bench.py", header + "\n\n" +
                        "\n\n".join(tables))
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
