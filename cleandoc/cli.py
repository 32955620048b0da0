"""The `cleandoc` command: parse options, call one library function, show progress and results.

The only module that knows about terminals (Typer and Rich live here and nowhere else).
"""

from __future__ import annotations

import logging
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from . import __version__
from .noise import NOISE_NAMES
from .options import (
    DEFAULT_ARCHITECTURE,
    LOSSES,
    MAX_INK_BIAS,
    PRECISIONS,
    CleanOptions,
    RunOptions,
    TrainOptions,
    default,
    help_text,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Clean scanned document pages with a learned denoising autoencoder.")
err = Console(stderr=True, highlight=False)


class OutputFormat(str, Enum):
    png = "png"
    tif = "tif"
    jpg = "jpg"


Loss = Enum("Loss", {name: name for name in LOSSES}, type=str)


Precision = Enum("Precision", {name: name for name in PRECISIONS}, type=str)  # the choices, for Typer

MODEL_HELP = "A model file (.safetensors), or default: the shipped model (used if omitted)."
HeldOut = Enum("HeldOut", {"val": "val", "sealed": "sealed"}, type=str)
EXIT_CODES = ("Exit status: 0 when every page was cleaned or skipped, 1 when a page failed, 2 for a usage problem "
              "(bad option, unusable model file), 130 when interrupted.")


def _run_option(name: str, **settings) -> typer.Option:
    """An option of how the model runs, with its help from RunOptions, where its default is too."""
    return typer.Option(help=help_text(RunOptions, name), **settings)


def _clean_option(name: str, *flags: str, **settings) -> typer.Option:
    return typer.Option(*flags, help=help_text(CleanOptions, name), **settings)


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        print(f"cleandoc {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Clean scanned document pages with a learned denoising autoencoder."""
    root = logging.getLogger()
    if not root.handlers:  # once, also when the app runs many times in one process (tests)
        # The PDF libraries log their repairs of damaged files as warnings; what matters of them reaches the user
        # as one line per file, so without a handler of its own a library warning is not printed.
        root.addHandler(logging.NullHandler())


def _cleaner(model: Optional[str], device: str, precision, threads: Optional[int] = None, tile: int = 0,
             batch_size: int = 0):
    """The front door, with its expected failures turned into a one-line error."""
    from .api import Cleaner
    from .store import ModelFileError

    try:
        return Cleaner.load(model or "default", device, getattr(precision, "value", precision), threads, tile,
                            batch_size)
    except (ModelFileError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _progress(quiet: bool) -> Progress | None:
    if quiet or not err.is_terminal:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=err, transient=True)


def _summary_record(summary, problems: list[tuple[str, str]]) -> dict:
    """What `clean --json` writes: the counts and every page's outcome."""
    pages = [{"input": str(r.job.source), "output": str(r.job.output), "status": r.status, "reason": r.reason,
              "seconds": round(r.seconds, 3), "warnings": r.warnings} for r in summary.results]
    pages += [{"input": source, "output": None, "status": "failed", "reason": reason, "seconds": 0, "warnings": []}
              for source, reason in problems]
    return {"cleaned": summary.count("cleaned"), "skipped": summary.count("skipped"),
            "failed": summary.count("failed") + len(problems), "warned": summary.warned,
            "interrupted": summary.interrupted, "seconds": round(summary.seconds, 3), "pages": pages}


def _single_file(inputs: list[str], output: Path) -> bool:
    """One input file (or -) and an output that names a file (an image or document extension, or -): file to
    file."""
    from .documents import PDF_EXTENSIONS
    from .imageio import WRITE_EXTENSIONS

    one_file = len(inputs) == 1 and (inputs[0] == "-" or Path(inputs[0]).is_file())
    return one_file and (str(output) == "-" or output.suffix.lower() in WRITE_EXTENSIONS | PDF_EXTENSIONS)


def _stdin_name(data: bytes) -> str:
    """A name for the page read from standard input, whose extension says whether it is a document."""
    if data.startswith(b"%PDF-"):
        return "stdin.pdf"
    if data.startswith((b"II*\0", b"MM\0*")):
        return "stdin.tif"
    return "stdin"


@app.command(epilog=EXIT_CODES)
def clean(
    inputs: Annotated[list[str], typer.Argument(help="Image and document (PDF, multi-page TIFF) files, folders or "
                                                     "glob patterns; - reads one from standard input.",
                                                show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The folder for the cleaned pages; for one input "
                                                                "file, the output file itself (its extension "
                                                                "sets the format; - writes to standard output).",
                                         show_default=False)],
    model: Annotated[Optional[str], typer.Option(help=MODEL_HELP, show_default=False)] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Walk subfolders and mirror them.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format of pages written into a folder or to "
                                                               "standard output.")] = OutputFormat.png,
    binarize: Annotated[bool, _clean_option("binarize", "--binarize")] = CleanOptions.binarize,
    split: Annotated[bool, typer.Option("--split", help="Write a document's pages as images (NAME-0001.png ...) "
                                                        "instead of a document of its own kind.")] = False,
    dpi: Annotated[Optional[float], _clean_option("dpi", min=10, max=4800, show_default=False)] = CleanOptions.dpi,
    jpeg_quality: Annotated[Optional[int], _clean_option("jpeg_quality", min=1, max=100, show_default=False)] = \
        CleanOptions.jpeg_quality,
    overwrite: Annotated[bool, _clean_option("overwrite")] = CleanOptions.overwrite,
    tile: Annotated[int, _run_option("tile", min=0)] = RunOptions.tile,
    batch_size: Annotated[int, _run_option("batch_size", min=0)] = RunOptions.batch_size,
    device: Annotated[str, _run_option("device")] = RunOptions.device,
    precision: Annotated[Precision, _run_option("precision")] = Precision(RunOptions.precision),
    threads: Annotated[Optional[int], _run_option("threads", min=1, show_default=False)] = RunOptions.threads,
    workers: Annotated[int, _clean_option("workers", min=0)] = CleanOptions.workers,
    shard: Annotated[Optional[str], typer.Option(help="Process only slice K of N of the sorted inputs, e.g. 2/8.",
                                                 show_default=False)] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write a summary here: the counts and, "
                                                                     "per page, status, seconds and warnings.",
                                                      show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and warnings.")] = False,
) -> None:
    """Clean pages and documents and write them, same size, resolution and name, under OUTPUT (or one file to
    OUTPUT)."""
    import json
    import tempfile

    from .documents import is_document
    from .files import Plan, file_job, parse_shard, plan_jobs
    from .imageio import BINARY_EXTENSIONS, WRITE_EXTENSIONS, WRITE_FORMATS, write_atomically

    try:
        shard_range = parse_shard(shard) if shard else None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    single = _single_file(inputs, output)
    extension = output.suffix.lower() if single and str(output) != "-" else WRITE_FORMATS[fmt.value]
    if binarize and extension in WRITE_EXTENSIONS - BINARY_EXTENSIONS:
        raise _fail("--binarize writes PNG or TIFF pages, not JPEG")
    if not single and output.exists() and not output.is_dir():
        raise _fail(f"{output}: exists and is not a folder (name a folder, or one input file for a file output)")
    if not single and "-" in inputs:
        raise _fail("- (standard input) is one page: give it alone, with -o FILE or -o -")
    cleaner = _cleaner(model, device, precision, threads, tile, batch_size)
    options = CleanOptions(overwrite=overwrite, binarize=binarize, workers=workers, dpi=dpi, jpeg_quality=jpeg_quality,
                           page_extension=WRITE_FORMATS[fmt.value])
    progress = _progress(quiet)
    started = time.perf_counter()
    cleaned_megapixels = 0.0

    def on_page(result) -> None:
        nonlocal cleaned_megapixels
        if result.status == "failed":
            (progress.console if progress else err).print(f"{result.job.source}: {result.reason}",
                                                          markup=False, soft_wrap=True)
        elif not quiet and not progress:
            pages = f"{result.pages} pages, " if result.job.kind != "page" else ""
            err.print(f"{result.status} {result.job.source} -> {result.job.output}"
                      + (f" ({pages}{result.seconds:.1f} s)" if result.status == "cleaned" else ""),
                      markup=False, soft_wrap=True)
        for warning in result.warnings:
            (progress.console if progress else err).print(f"warning: {result.job.source}: {warning}",
                                                          markup=False, soft_wrap=True)
        if progress:
            cleaned_megapixels += result.megapixels
            rate = cleaned_megapixels / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.2f} MP/s")

    with tempfile.TemporaryDirectory(prefix="cleandoc-") as scratch:
        if single:
            source = Path(inputs[0])
            if inputs[0] == "-":
                data = sys.stdin.buffer.read()
                source = Path(scratch) / _stdin_name(data)
                source.write_bytes(data)
            if str(output) == "-" and is_document(source):
                extension = ".pdf" if source.suffix.lower() == ".pdf" else ".tif"
            target = Path(scratch) / f"stdout{extension}" if str(output) == "-" else output
            try:
                plan = Plan([file_job(source, target)], [], 1)
            except ValueError as exc:
                raise _fail(str(exc)) from None
        else:
            plan = plan_jobs(inputs, output, extension, recursive, shard_range, split)
        for source, reason in plan.problems:
            err.print(f"{source}: {reason}", markup=False, soft_wrap=True)
        if progress:
            progress.start()
            task = progress.add_task("cleaning", total=len(plan.jobs), rate="")
        try:
            summary = cleaner.clean_files(plan.jobs, options, on_page)
        finally:
            if progress:
                progress.stop()
        if str(output) == "-" and summary.count("cleaned"):
            sys.stdout.buffer.write(plan.jobs[0].output.read_bytes())
            sys.stdout.buffer.flush()
    failed = summary.count("failed") + len(plan.problems)
    if not quiet:
        shard_note = f" (shard {shard}, {len(plan.jobs)} of {plan.total_before_shard} pages)" if shard else ""
        stopped = "interrupted: " if summary.interrupted else ""
        warned = f" ({summary.warned} with a warning)" if summary.warned else ""
        err.print(f"{stopped}{summary.count('cleaned')} cleaned{warned}, {summary.count('skipped')} skipped, "
                  f"{failed} failed in {summary.seconds:.1f} s "
                  f"({summary.megapixels / max(summary.seconds, 1e-9):.2f} MP/s){shard_note}",
                  markup=False, soft_wrap=True)
    if json_path:
        try:
            write_atomically(json_path, json.dumps(_summary_record(summary, plan.problems), indent=2).encode())
        except OSError as exc:
            raise _fail(f"{json_path}: cannot write ({exc.strerror or exc})") from None
    if summary.interrupted:
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


def _train_option(name: str, *flags: str, **settings) -> typer.Option:
    """A `cleandoc train` option whose help comes from TrainOptions, where its default is too."""
    return typer.Option(*flags, help=help_text(TrainOptions, name), **settings)


SOURCE_HELP = ("optionally followed by :WEIGHT (its share of the patches against other sources) or "
               ":weight=W,val=F,sealed=F (F: the share of its page groups held out); repeatable.")


@app.command()
def train(
    out: Annotated[Path, typer.Option("--output", "-o", help="Where to write the best model (.safetensors).",
                                      show_default=False)],
    pairs: Annotated[Optional[list[str]], typer.Option(
        help="A source of (dirty, clean) page pairs: DIRTY:CLEAN, two folders paired by relative path and stem, "
             f"{SOURCE_HELP}", show_default=False)] = None,
    pages: Annotated[Optional[list[str]], typer.Option(
        help=f"A source of clean pages alone, each patch corrupted by --noise: CLEAN, {SOURCE_HELP}",
        show_default=False)] = None,
    val_pairs: Annotated[Optional[list[str]], typer.Option(
        help="A validation source used whole: DIRTY:CLEAN; repeatable.", show_default=False)] = None,
    noise: Annotated[Optional[list[str]], typer.Option(
        help=f"A corruption step NAME[:STRENGTH], repeatable, applied in order: {', '.join(NOISE_NAMES)}.",
        show_default=False)] = None,
    synthetic_fraction: Annotated[float, _train_option("synthetic_fraction", min=0.0, max=1.0)] =
        default(TrainOptions, "synthetic_fraction"),
    contractive: Annotated[float, _train_option("contractive", min=0.0)] = default(TrainOptions, "contractive"),
    arch: Annotated[str, typer.Option(help="Architecture: unet or dae.")] = DEFAULT_ARCHITECTURE["arch"],
    widths: Annotated[Optional[str], typer.Option(help="Channels per level, comma-separated, e.g. 32,64,128.",
                                                  show_default=False)] = None,
    unshuffle: Annotated[Optional[int], typer.Option(help="unet: pixel-unshuffle factor of the stem.",
                                                     show_default=False)] = None,
    convs: Annotated[Optional[int], typer.Option(help="3x3 convolutions per block.", show_default=False)] = None,
    kernel: Annotated[Optional[int], typer.Option(help="unet: side of the filter of the input predicted for each "
                                                       "pixel (1: a per-pixel gain; 0: none).",
                                                  show_default=False)] = None,
    epochs: Annotated[int, _train_option("epochs", min=0)] = default(TrainOptions, "epochs"),
    patch_size: Annotated[int, _train_option("patch_size", min=16)] = default(TrainOptions, "patch_size"),
    max_scale: Annotated[float, _train_option("max_scale", min=1.0)] = default(TrainOptions, "max_scale"),
    patches_per_epoch: Annotated[int, _train_option("patches_per_epoch", min=1)] =
        default(TrainOptions, "patches_per_epoch"),
    batch_size: Annotated[int, _train_option("batch_size", min=1)] = default(TrainOptions, "batch_size"),
    lr: Annotated[float, _train_option("lr", min=0.0)] = default(TrainOptions, "lr"),
    weight_decay: Annotated[float, _train_option("weight_decay", min=0.0)] = default(TrainOptions, "weight_decay"),
    loss: Annotated[Loss, _train_option("loss")] = Loss(default(TrainOptions, "loss")),
    ink_weight: Annotated[float, _train_option("ink_weight", min=1.0)] = default(TrainOptions, "ink_weight"),
    ink_bias: Annotated[Optional[float], _train_option("ink_bias", min=0.0, max=MAX_INK_BIAS,
                                                                 show_default=False)] = \
        default(TrainOptions, "ink_bias"),
    faint_ink_bias: Annotated[Optional[float], _train_option("faint_ink_bias", min=0.0, max=MAX_INK_BIAS,
                                                             show_default=False)] = \
        default(TrainOptions, "faint_ink_bias"),
    binary_style: Annotated[bool, _train_option("binary_style")] = default(TrainOptions, "binary_style"),
    patience: Annotated[int, _train_option("patience", min=0)] = default(TrainOptions, "patience"),
    seed: Annotated[int, _train_option("seed")] = default(TrainOptions, "seed"),
    val_fraction: Annotated[float, _train_option("val_fraction", min=0.0, max=0.9)] =
        default(TrainOptions, "val_fraction"),
    sealed_fraction: Annotated[float, _train_option("sealed_fraction", min=0.0, max=0.9)] =
        default(TrainOptions, "sealed_fraction"),
    init: Annotated[Optional[Path], typer.Option(help="Fine-tune this model instead of starting afresh.")] = None,
    teacher: Annotated[Optional[Path], _train_option("teacher", show_default=False)] = None,
    teacher_weight: Annotated[float, _train_option("teacher_weight", min=0.0, max=1.0)] = \
        default(TrainOptions, "teacher_weight"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run that writes OUTPUT, with the "
                                                          "options stored in its checkpoint.")] = False,
    device: Annotated[str, typer.Option(help=help_text(RunOptions, "device"))] = "auto",
    workers: Annotated[Optional[int], typer.Option(
        min=0, help="Processes cutting and corrupting training patches beside the model (default: none on a CPU, "
                    "whose cores the model uses; one per core but one, up to 8, beside a GPU).",
        show_default=False)] = None,
    amp: Annotated[bool, _train_option("amp")] = default(TrainOptions, "amp"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the result.")] = False,
) -> None:
    """Train a model on page pairs and clean pages from one or more sources, keeping the best by validation RMSE."""
    from .data import PairingError, parse_source
    from .store import ModelFileError
    from .train import TrainingError, train_from_sources

    config: dict = {"arch": arch}
    try:
        if widths:
            config["widths"] = [int(w) for w in widths.split(",")]
    except ValueError:
        raise _fail(f"--widths must be comma-separated integers, got {widths!r}") from None
    if arch == DEFAULT_ARCHITECTURE["arch"]:
        config = {**DEFAULT_ARCHITECTURE, **config}
    given = {"unshuffle": unshuffle, "convs": convs, "kernel": kernel}
    config.update({k: v for k, v in given.items() if v is not None})
    try:
        sources = [parse_source(text) for text in pairs or []] + [parse_source(text, pairs=False)
                                                                  for text in pages or []]
        val_sources = [parse_source(text) for text in val_pairs or []]
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if not sources:
        raise _fail("give at least one training source: --pairs DIRTY:CLEAN or --pages CLEAN")
    options = TrainOptions(model=config, epochs=epochs, patch_size=patch_size, max_scale=max_scale,
                           patches_per_epoch=patches_per_epoch, batch_size=batch_size, lr=lr,
                           weight_decay=weight_decay, loss=loss.value, ink_weight=ink_weight,
                           ink_bias=ink_bias, faint_ink_bias=faint_ink_bias, binary_style=binary_style,
                           patience=patience, seed=seed,
                           noise=list(noise or []), synthetic_fraction=synthetic_fraction, contractive=contractive,
                           amp=amp, val_fraction=val_fraction, sealed_fraction=sealed_fraction,
                           teacher=str(teacher) if teacher else None, teacher_weight=teacher_weight)
    progress = _progress(quiet)
    task = None

    def on_progress(event: dict) -> None:
        nonlocal task
        kind = event["event"]
        if kind == "data" and not quiet:
            for source in event["sources"]:
                where = f"{source['dirty']} + {source['clean']}" if source["dirty"] else f"{source['clean']} (clean)"
                if source.get("use") == "validation":
                    err.print(f"validation: {where}, {source['pages']} pages", markup=False, soft_wrap=True)
                else:
                    err.print(f"source: {where}, weight {source['weight']:g}: {source['train_pages']} training, "
                              f"{source['val_pages']} validation, {source['sealed_pages']} sealed pages",
                              markup=False, soft_wrap=True)
            err.print(f"{event['train_pages']} training pages, {event['val_pages']} validation pages",
                      markup=False, soft_wrap=True)
        elif kind == "step" and progress:  # one bar for the whole run, so ETA means the end of training
            total = event["epochs"] * event["steps"]
            if task is None:
                task = progress.add_task("", total=total, rate="")
            progress.update(task, completed=(event["epoch"] - 1) * event["steps"] + event["step"], total=total,
                            description=f"epoch {event['epoch']}/{event['epochs']}", rate=f"loss {event['loss']:.4f}")
        elif kind == "epoch" and not quiet:
            val = "n/a" if event["val_rmse"] is None else f"{event['val_rmse']:.4f}"
            best = "" if event["best_rmse"] is None else f" (best {event['best_rmse']:.4f} @ {event['best_epoch']})"
            by_source = "".join(f"\n    {name}: {value:.4f}" for name, value in event.get("val_by_source", {}).items())
            (progress.console if progress else err).print(
                f"epoch {event['epoch']}/{event['epochs']}  loss {event['train_loss']:.5f}  val RMSE {val}{best}"
                f"  {event['seconds']:.0f} s{by_source}", markup=False, soft_wrap=True)

    if progress:
        progress.start()
    try:
        state = train_from_sources(sources, out, options, val_sources=val_sources, init=init, resume=resume,
                                   device=device, workers=workers, provenance={"command": " ".join(["cleandoc", *sys.argv[1:]])},
                                   on_progress=on_progress)
    except (PairingError, TrainingError, ModelFileError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; continue with the same command and --resume", 130) from None
    finally:
        if progress:
            progress.stop()
    best = "n/a" if state["best_rmse"] is None else f"{state['best_rmse']:.4f}"
    err.print(f"wrote {out} (epoch {state['best_epoch']}, validation RMSE {best})", markup=False, soft_wrap=True)


@app.command()
def evaluate(
    dirty: Annotated[Optional[Path], typer.Option(help="Folder of dirty pages.", show_default=False)] = None,
    clean: Annotated[Optional[Path], typer.Option(help="Folder of clean targets, paired by relative path and stem.",
                                                  show_default=False)] = None,
    held_out: Annotated[Optional[HeldOut], typer.Option(
        help="Instead of --dirty and --clean: the pages the model's own training run held out (val: its "
             "validation pages; sealed: its sealed ones), found from what its file records.",
        show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option(help=MODEL_HELP, show_default=False)] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON here.")] = None,
    sheet: Annotated[Optional[Path], typer.Option(help="Write a PNG of the worst pages: dirty | cleaned | target "
                                                       "| error.")] = None,
    worst: Annotated[int, typer.Option(min=1, help="Rows on the sheet.")] = 6,
    sheet_height: Annotated[int, typer.Option(min=32, help="Height of each row of the sheet, in pixels.")] = 360,
    tile: Annotated[int, _run_option("tile", min=0)] = RunOptions.tile,
    batch_size: Annotated[int, _run_option("batch_size", min=0)] = RunOptions.batch_size,
    device: Annotated[str, _run_option("device")] = RunOptions.device,
    precision: Annotated[Precision, _run_option("precision")] = Precision(RunOptions.precision),
    threads: Annotated[Optional[int], _run_option("threads", min=1, show_default=False)] = RunOptions.threads,
    binary: Annotated[bool, typer.Option("--binary", help="Score binarised pages against binary ground truth "
                                                          "(DIBCO F-measure, PSNR, DRD), beside doing nothing, "
                                                          "Otsu and Sauvola.")] = False,
    ocr: Annotated[bool, typer.Option("--ocr", help="Score what Tesseract reads: character error rate against the "
                                                    "text beside each page (NAME.txt) or read on its clean target, "
                                                    "beside doing nothing and unpaper with OCRmyPDF's --clean "
                                                    "settings.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the totals.")] = False,
) -> None:
    """Score a model on page pairs: pooled RMSE, PSNR and SSIM beside doing nothing; with --binary the DIBCO
    figures beside classic binarisers; with --ocr Tesseract's character error rate beside unpaper."""
    import json

    from rich.table import Table

    from .data import PairingError, find_pairs, held_out_pairs
    from .evaluate import BINARY_METHODS, contact_sheet, evaluate_binary
    from .evaluate import evaluate as run_evaluation
    from .imageio import write_atomically
    from .ocr import OCR_METHODS, OcrError, score_ocr

    if (dirty is None or clean is None) == (held_out is None):
        raise _fail("give --dirty and --clean, or --held-out val|sealed")
    if binary and ocr:
        raise _fail("--binary and --ocr score different things: give one")
    cleaner = _cleaner(model, device, precision, threads, tile, batch_size)
    try:
        pairs = find_pairs(dirty, clean) if held_out is None else held_out_pairs(cleaner.info.provenance,
                                                                                 held_out.value)
        if not pairs:
            raise _fail(f"{cleaner.info.source}: its file records no {held_out.value} pages")
        if binary:
            report = evaluate_binary(pairs, cleaner)
        elif ocr:
            report = score_ocr(pairs, cleaner)
        else:
            report, rows = run_evaluation(pairs, cleaner, worst=worst if sheet else 0)
    except (PairingError, OcrError) as exc:
        raise _fail(str(exc)) from None
    out = Console(highlight=False)
    table = Table(title=f"{cleaner.info.source} on {len(report.pages)} pages", title_justify="left")
    if ocr:
        table.add_column("page", no_wrap=True)
        table.add_column("characters", justify="right")
        for method in OCR_METHODS:
            table.add_column(f"CER {method}", justify="right")
        if not quiet:
            for p in report.pages:
                table.add_row(p.name, str(p.characters), *(f"{p.cer(m):.2%}" for m in OCR_METHODS))
            table.add_section()
        table.add_row("all (pooled)", str(sum(p.characters for p in report.pages)),
                      *(f"{report.cer(m):.2%}" for m in OCR_METHODS), style="bold")
    elif binary:
        table.add_column("page", no_wrap=True)
        for method in BINARY_METHODS:
            table.add_column(f"{method}\nFM / PSNR / DRD", justify="right")

        def cells(scores) -> list[str]:
            return [f"{fm:.2f} / {psnr:.2f} / {drd:.2f}" for fm, psnr, drd in scores]

        if not quiet:
            for p in report.pages:
                table.add_row(p.name, *cells(p.scores[m] for m in BINARY_METHODS))
            table.add_section()
        table.add_row("mean", *cells(report.mean(m) for m in BINARY_METHODS), style="bold")
    else:
        for column in ("page", "RMSE input", "RMSE cleaned", "PSNR input", "PSNR cleaned", "SSIM input",
                       "SSIM cleaned"):
            table.add_column(column, justify="left" if column == "page" else "right", no_wrap=column == "page")
        if not quiet:
            for p in report.pages:
                table.add_row(p.name, f"{p.input_rmse:.4f}", f"{p.rmse:.4f}", f"{p.input_psnr:.2f}", f"{p.psnr:.2f}",
                              f"{p.input_ssim:.4f}", f"{p.ssim:.4f}")
            table.add_section()
        table.add_row("all (pooled)", f"{report.input_rmse:.4f}", f"{report.rmse:.4f}",
                      f"{report.mean('input_psnr'):.2f}", f"{report.mean('psnr'):.2f}",
                      f"{report.mean('input_ssim'):.4f}", f"{report.mean('ssim'):.4f}", style="bold")
    out.print(table)
    try:
        if json_path:
            write_atomically(json_path, json.dumps({"model": cleaner.info.source, **report.to_dict()},
                                                   indent=2).encode())
        if sheet and not (binary or ocr):
            contact_sheet(rows, sheet, sheet_height)
            err.print(f"wrote {sheet} ({len(rows)} worst pages)", markup=False, soft_wrap=True)
    except OSError as exc:
        raise _fail(f"{exc.filename or json_path or sheet}: cannot write ({exc.strerror or exc})") from None


@app.command("inspect")
def inspect_command(
    model: Annotated[Optional[Path], typer.Argument(metavar="MODEL", show_default=False,
                                                    help=MODEL_HELP)] = None,
    filters: Annotated[Optional[Path], typer.Option(help="Also draw the first layer's filters into this PNG.",
                                                    show_default=False)] = None,
    cell: Annotated[int, typer.Option(min=1, help="Side of each filter's cell in the picture, in pixels.")] = 48,
) -> None:
    """Show a model's card: architecture, size, receptive field, training data and figures."""
    from rich.table import Table

    from .inspect_model import filters_picture, model_card

    cleaner = _cleaner(model, "cpu", "fp32")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in model_card(cleaner.model, cleaner.info):
        table.add_row(escape(label), escape(value))
    Console(highlight=False).print(table)
    if filters:
        try:
            count = filters_picture(cleaner.model, filters, cell)
        except ValueError as exc:
            raise _fail(str(exc)) from None
        except OSError as exc:
            raise _fail(f"{filters}: cannot write ({exc.strerror or exc})") from None
        err.print(f"wrote {filters} ({count} filters)", markup=False, soft_wrap=True)


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--output", "-o", help="Folder for the dirty/ and clean/ page pairs.",
                                      show_default=False)],
    pages: Annotated[int, typer.Option(min=1, help="How many page pairs to write.", show_default=False)],
    dpi: Annotated[int, typer.Option(min=50, max=1200, help="Resolution of the rendered pages.")] = 300,
    seed: Annotated[int, typer.Option(help="Page K is the same for a seed, whatever --pages is.")] = 0,
    figures: Annotated[bool, typer.Option(
        "--figures", help="Render A5 pages of figures (a grey chart, a photograph, a hatched drawing, a stamp, a "
        "ruled table) instead of A4 text pages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Render synthetic pages (text, or with --figures figures alone) and corrupted copies of them, as (dirty,
    clean) training pairs."""
    from .imageio import PageError
    from .synth import synth_pages

    if out.exists() and not out.is_dir():
        raise _fail(f"{out}: exists and is not a folder")
    progress = _progress(quiet)
    started = time.perf_counter()
    if progress:
        progress.start()
        task = progress.add_task("rendering", total=pages, rate="")

    def on_page(done: int, total: int) -> None:
        if progress:
            rate = done / max(time.perf_counter() - started, 1e-9)
            progress.update(task, completed=done, rate=f"{rate:.2f} pages/s")

    try:
        pairs = synth_pages(out, pages, dpi=dpi, seed=seed, on_page=on_page, figures=figures)
    except PageError as exc:
        raise _fail(f"{out}: {exc}") from None
    except OSError as exc:
        raise _fail(f"{exc.filename or out}: cannot write ({exc.strerror or exc})") from None
    finally:
        if progress:
            progress.stop()
    if not quiet:
        err.print(f"wrote {len(pairs)} page pairs under {out / 'dirty'} and {out / 'clean'} "
                  f"in {time.perf_counter() - started:.1f} s", markup=False, soft_wrap=True)
