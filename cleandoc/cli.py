"""The `cleandoc` command: parse options, call one library function, show progress and results.

The only module that knows about terminals (Typer and Rich live here and nowhere else).
"""

from __future__ import annotations

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

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Clean scanned document pages with a learned denoising autoencoder.")
err = Console(stderr=True, highlight=False)


class OutputFormat(str, Enum):
    png = "png"
    tif = "tif"
    jpg = "jpg"


class Loss(str, Enum):
    mse = "mse"
    l1 = "l1"
    bce = "bce"


class Precision(str, Enum):  # tiling.PRECISIONS, as choices for Typer
    auto = "auto"
    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


PRECISION_HELP = ("Arithmetic precision: auto is fp16 on CUDA, bf16 on CPUs with bf16 in hardware (AVX-512 BF16 "
                  "or AMX), fp32 elsewhere.")
TILE_HELP = "Tile size in pixels; 0 picks tiles for the model, page and device."
BATCH_HELP = "Tiles per model call; 0: one on a CPU, four on CUDA."
MODEL_HELP = ("A model file (.safetensors) or a shipped model: default (the best; used if omitted) or fast "
              "(about 17x faster on a CPU, coarser).")


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


def _load(model_path: Optional[Path], device_name: str):
    """The one loader, with its expected failures turned into a one-line error."""
    from .store import ModelFileError, load_model
    from .tiling import pick_device

    try:
        device = pick_device(device_name)
        return load_model(model_path, device), device
    except (ModelFileError, ValueError) as exc:
        raise _fail(str(exc)) from None


def _autocast(precision: Precision, device):
    from .tiling import autocast_dtype

    return autocast_dtype(precision.value, device)


def _progress(quiet: bool) -> Progress | None:
    if quiet or not err.is_terminal:
        return None
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=err, transient=True)


@app.command()
def clean(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders or glob patterns.", show_default=False)],
    outdir: Annotated[Path, typer.Option("--output", "-o", help="Folder for the cleaned pages.",
                                         show_default=False)],
    model: Annotated[Optional[Path], typer.Option(help=MODEL_HELP)] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Walk subfolders and mirror them.")] = False,
    fmt: Annotated[OutputFormat, typer.Option("--format", help="Output format (8-bit grayscale).")] = OutputFormat.png,
    overwrite: Annotated[bool, typer.Option(help="Replace outputs that already exist (default: skip them).")] = False,
    tile: Annotated[int, typer.Option(min=0, help=TILE_HELP)] = 0,
    batch_size: Annotated[int, typer.Option(min=0, help=BATCH_HELP)] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = Precision.auto,
    workers: Annotated[int, typer.Option(min=0, help="Threads decoding and encoding pages while the model runs; "
                                                      "0: one per core.")] = 0,
    shard: Annotated[Optional[str], typer.Option(help="Process only slice K of N of the sorted inputs, e.g. 2/8.",
                                                 show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Clean pages and write them, same size and name, under OUTDIR."""
    from .clean import CleanOptions, clean_pages
    from .files import parse_shard, plan_jobs
    from .imageio import WRITE_FORMATS

    try:
        shard_range = parse_shard(shard) if shard else None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if outdir.exists() and not outdir.is_dir():
        raise _fail(f"{outdir}: exists and is not a folder")
    plan = plan_jobs(inputs, outdir, WRITE_FORMATS[fmt.value], recursive, shard_range)
    for source, reason in plan.problems:
        err.print(f"{source}: {reason}", markup=False, soft_wrap=True)
    net, dev = _load(model, device)
    options = CleanOptions(tile=tile, batch_size=batch_size, overwrite=overwrite, workers=workers,
                           dtype=_autocast(precision, dev))
    progress = _progress(quiet)
    started = time.perf_counter()
    cleaned_megapixels = 0.0
    if progress:
        progress.start()
        task = progress.add_task("cleaning", total=len(plan.jobs), rate="")

    def on_page(result) -> None:
        nonlocal cleaned_megapixels
        if result.status == "failed":
            (progress.console if progress else err).print(f"{result.job.source}: {result.reason}",
                                                          markup=False, soft_wrap=True)
        elif not quiet and not progress:
            err.print(f"{result.status} {result.job.source} -> {result.job.output}"
                      + (f" ({result.seconds:.1f} s)" if result.status == "cleaned" else ""),
                      markup=False, soft_wrap=True)
        if progress:
            cleaned_megapixels += result.megapixels
            rate = cleaned_megapixels / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:.2f} MP/s")

    try:
        summary = clean_pages(plan.jobs, net, options, dev, on_page)
    finally:
        if progress:
            progress.stop()
    failed = summary.count("failed") + len(plan.problems)
    if not quiet:
        shard_note = f" (shard {shard}, {len(plan.jobs)} of {plan.total_before_shard} pages)" if shard else ""
        stopped = "interrupted: " if summary.interrupted else ""
        err.print(f"{stopped}{summary.count('cleaned')} cleaned, {summary.count('skipped')} skipped, {failed} failed "
                  f"in {summary.seconds:.1f} s ({summary.megapixels / max(summary.seconds, 1e-9):.2f} MP/s)"
                  f"{shard_note}", markup=False, soft_wrap=True)
    if summary.interrupted:
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)


@app.command()
def train(
    clean: Annotated[Path, typer.Option(help="Folder of clean targets, paired by relative path and stem.",
                                        show_default=False)],
    out: Annotated[Path, typer.Option("--output", "-o", help="Where to write the best model (.safetensors).",
                                      show_default=False)],
    dirty: Annotated[Optional[Path], typer.Option(help="Folder of dirty pages; without it, train from clean pages "
                                                       "alone, corrupted by --noise.", show_default=False)] = None,
    noise: Annotated[Optional[list[str]], typer.Option(help="A corruption step NAME[:STRENGTH], repeatable, applied "
                                                            "in order: gaussian, mask, saltpepper, blur, jpeg, "
                                                            "illumination, texture, stains, ink, speckle, scanlines, "
                                                            "random, transfer (real noise from the pairs).",
                                                       show_default=False)] = None,
    synthetic_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="With --dirty and --noise: share of "
                                                                             "patches corrupted from clean targets "
                                                                             "instead of real.")] = 0.5,
    contractive: Annotated[float, typer.Option(min=0.0, help="Weight of the contractive penalty on the "
                                                             "encoder (0: off).")] = 0.0,
    arch: Annotated[str, typer.Option(help="Architecture: unet or dae.")] = "unet",
    widths: Annotated[Optional[str], typer.Option(help="Channels per level, comma-separated, e.g. 32,64,128.",
                                                  show_default=False)] = None,
    unshuffle: Annotated[Optional[int], typer.Option(help="unet: pixel-unshuffle factor of the stem.",
                                                     show_default=False)] = None,
    convs: Annotated[Optional[int], typer.Option(help="3x3 convolutions per block.", show_default=False)] = None,
    kernel: Annotated[Optional[int], typer.Option(help="unet: side of the filter of the input predicted for each "
                                                       "pixel (1: a per-pixel gain; 0: none).",
                                                  show_default=False)] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 40,
    patch_size: Annotated[int, typer.Option(min=16, help="Side of the training patches.")] = 128,
    max_scale: Annotated[float, typer.Option(min=1.0, help="Rescale half the patches by up to this factor, "
                                                           "up or down (1: off; it blurs the targets).")] = 1.0,
    patches_per_epoch: Annotated[int, typer.Option(min=1)] = 2048,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    lr: Annotated[float, typer.Option(min=0.0, help="Peak learning rate (warm-up, then cosine decay).")] = 2e-3,
    weight_decay: Annotated[float, typer.Option(min=0.0, help="AdamW weight decay.")] = 1e-4,
    loss: Annotated[Loss, typer.Option(help="mse (Gaussian decoder), bce (Bernoulli decoder) or l1.")] = Loss.mse,
    patience: Annotated[int, typer.Option(min=0, help="Stop after this many epochs without a better validation "
                                                      "RMSE; 0 never stops early.")] = 10,
    seed: Annotated[int, typer.Option(help="Makes a run repeatable on the same machine.")] = 0,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of page groups held out.")] = 0.2,
    val_dirty: Annotated[Optional[Path], typer.Option(help="Explicit validation set: dirty pages.")] = None,
    val_clean: Annotated[Optional[Path], typer.Option(help="Explicit validation set: clean pages.")] = None,
    init: Annotated[Optional[Path], typer.Option(help="Fine-tune this model instead of starting afresh.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run that writes OUTPUT, with the options "
                                                              "stored in its checkpoint.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    amp: Annotated[bool, typer.Option(help="Mixed precision (bf16 autocast) on CUDA.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors and the result.")] = False,
) -> None:
    """Train a model on (dirty, clean) page pairs, keeping the best by validation RMSE."""
    from .data import PairingError
    from .store import ModelFileError
    from .train import TrainingError, TrainOptions, train_from_folders

    config: dict = {"arch": arch}
    try:
        if widths:
            config["widths"] = [int(w) for w in widths.split(",")]
    except ValueError:
        raise _fail(f"--widths must be comma-separated integers, got {widths!r}") from None
    given = {"unshuffle": unshuffle, "convs": convs, "kernel": kernel}
    config.update({k: v for k, v in given.items() if v is not None})
    options = TrainOptions(model=config, epochs=epochs, patch_size=patch_size, max_scale=max_scale,
                           patches_per_epoch=patches_per_epoch,
                           batch_size=batch_size, lr=lr, weight_decay=weight_decay, loss=loss.value,
                           patience=patience, seed=seed, noise=list(noise or []),
                           synthetic_fraction=synthetic_fraction, contractive=contractive, amp=amp)
    progress = _progress(quiet)
    task = None

    def on_progress(event: dict) -> None:
        nonlocal task
        kind = event["event"]
        if kind == "data" and not quiet:
            err.print(f"{event['train_pages']} training pages, {event['val_pages']} validation pages "
                      f"({event['validation']})", markup=False, soft_wrap=True)
        elif kind == "step" and progress:  # one bar for the whole run, so ETA means the end of training
            total = event["epochs"] * event["steps"]
            if task is None:
                task = progress.add_task("", total=total, rate="")
            progress.update(task, completed=(event["epoch"] - 1) * event["steps"] + event["step"], total=total,
                            description=f"epoch {event['epoch']}/{event['epochs']}", rate=f"loss {event['loss']:.4f}")
        elif kind == "epoch" and not quiet:
            val = "n/a" if event["val_rmse"] is None else f"{event['val_rmse']:.4f}"
            best = "" if event["best_rmse"] is None else f" (best {event['best_rmse']:.4f} @ {event['best_epoch']})"
            (progress.console if progress else err).print(
                f"epoch {event['epoch']}/{event['epochs']}  loss {event['train_loss']:.5f}  val RMSE {val}{best}"
                f"  {event['seconds']:.0f} s", markup=False, soft_wrap=True)

    if progress:
        progress.start()
    try:
        state = train_from_folders(dirty, clean, out, options, val_fraction=val_fraction, val_dirty=val_dirty,
                                   val_clean=val_clean, init=init, resume=resume, device=device,
                                   provenance={"command": " ".join(["cleandoc", *sys.argv[1:]])},
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
    dirty: Annotated[Path, typer.Option(help="Folder of dirty pages.", show_default=False)],
    clean: Annotated[Path, typer.Option(help="Folder of clean targets, paired by relative path and stem.",
                                        show_default=False)],
    model: Annotated[Optional[Path], typer.Option(help=MODEL_HELP)] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures as JSON here.")] = None,
    sheet: Annotated[Optional[Path], typer.Option(help="Write a PNG of the worst pages: dirty | cleaned | target "
                                                       "| error.")] = None,
    worst: Annotated[int, typer.Option(min=1, help="Rows on the sheet.")] = 6,
    sheet_height: Annotated[int, typer.Option(min=32, help="Height of each row of the sheet, in pixels.")] = 360,
    tile: Annotated[int, typer.Option(min=0, help=TILE_HELP)] = 0,
    batch_size: Annotated[int, typer.Option(min=0, help=BATCH_HELP)] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[Precision, typer.Option(help=PRECISION_HELP)] = Precision.auto,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the totals.")] = False,
) -> None:
    """Score a model on page pairs: pooled RMSE, PSNR and SSIM, beside doing nothing."""
    import json

    from rich.table import Table

    from .data import PairingError, find_pairs
    from .evaluate import contact_sheet
    from .evaluate import evaluate as run_evaluation
    from .imageio import write_atomically

    net, dev = _load(model, device)
    try:
        pairs = find_pairs(dirty, clean)
        report, rows = run_evaluation(pairs, net, dev, tile=tile, batch_size=batch_size,
                                      dtype=_autocast(precision, dev),
                                      worst=worst if sheet else 0)
    except PairingError as exc:
        raise _fail(str(exc)) from None
    out = Console(highlight=False)
    table = Table(title=f"{net.source} on {len(report.pages)} pages", title_justify="left")
    for column in ("page", "RMSE input", "RMSE cleaned", "PSNR input", "PSNR cleaned", "SSIM input", "SSIM cleaned"):
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
            write_atomically(json_path, json.dumps({"model": net.source, **report.to_dict()}, indent=2).encode())
        if sheet:
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

    net, _ = _load(model, "cpu")
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in model_card(net):
        table.add_row(escape(label), escape(value))
    Console(highlight=False).print(table)
    if filters:
        try:
            count = filters_picture(net, filters, cell)
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
    dpi: Annotated[int, typer.Option(min=50, max=1200, help="Resolution of the rendered A4 pages.")] = 300,
    seed: Annotated[int, typer.Option(help="Page K is the same for a seed, whatever --pages is.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
) -> None:
    """Render synthetic text pages and corrupted copies of them, as (dirty, clean) training pairs."""
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
        pairs = synth_pages(out, pages, dpi=dpi, seed=seed, on_page=on_page)
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
