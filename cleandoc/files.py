"""Turn the user's inputs (files, folders, glob patterns) into a fixed, sorted list of jobs.

The list depends only on the inputs, never on the machine, so several machines given the same inputs
and different `--shard K/N` split the work without talking to each other. Problems (a missing path, two
pages that would get the same output name, an output that would overwrite an input) are collected
rather than raised, so the CLI can report them all at once and still clean everything else.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})  # compared lower-cased
DOCUMENT_EXTENSIONS = frozenset({".pdf"})  # and multi-page TIFFs, found by their content
GLOB_CHARACTERS = "*?["
SHARD_RULE = "shard must be K/N with 1 <= K <= N"


@dataclass(frozen=True)
class Job:
    """One page or document to clean: the input file as found (not resolved) and where its clean version goes.

    kind "page": an image, written to `output`. kind "document": a PDF or multi-page TIFF, written as one document
    of its own kind to `output`. kind "split": a document whose pages are written as images, `output` with
    "-0001" and the page's extension added for page 1 (see `page_output`)."""

    source: Path
    output: Path
    kind: str = "page"

    def page_output(self, number: int, extension: str) -> Path:
        """Where page `number` of a split document goes."""
        return self.output.with_name(f"{self.output.name}-{number:04d}{extension}")


@dataclass
class Plan:
    """The jobs of this shard, plus every problem found while looking for them."""

    jobs: list[Job]
    problems: list[tuple[str, str]]  # (what the user typed or the file, one-line reason)
    total_before_shard: int


def plan_jobs(
    inputs: list[str],
    outdir: Path,
    extension: str = ".png",
    recursive: bool = False,
    shard: tuple[int, int] | None = None,
    split: bool = False,
) -> Plan:
    """Expand `inputs` into jobs writing to `outdir`, sorted by output path, keeping shard K of N round-robin.
    Images get `extension`; documents (PDFs, multi-page TIFFs) keep their own kind, or with `split` become one
    image per page.

    Problems are reported in every shard: they are few, and each machine's user should see them.
    """
    if shard is not None and not 1 <= shard[0] <= shard[1]:
        raise ValueError(f"{SHARD_RULE}, got '{shard[0]}/{shard[1]}'")
    outdir_resolved = outdir.resolve()
    problems: list[tuple[str, str]] = []
    found: list[tuple[Path, Path]] = []  # (source, output path relative to outdir)
    for text in inputs:
        found += _expand_input(text, recursive, outdir_resolved, problems)

    # Sorting before deduplicating makes "the first" independent of the order the inputs were typed in.
    candidates = sorted(
        (_output(source, outdir / relative, extension, split) for source, relative in found),
        key=lambda candidate: (candidate[1].as_posix(), candidate[0].as_posix()),
    )
    input_by_resolved: dict[Path, Path] = {}
    for source, _, _ in candidates:
        input_by_resolved.setdefault(source.resolve(), source)

    jobs: list[Job] = []
    seen_sources: set[Path] = set()
    first_source_by_output: dict[Path, Path] = {}
    for source, output, kind in candidates:
        source_resolved = source.resolve()
        if source_resolved in seen_sources:
            continue
        seen_sources.add(source_resolved)
        output_resolved = output.resolve()
        overwritten = input_by_resolved.get(output_resolved)
        if overwritten is not None:
            other = "" if output_resolved == source_resolved else f" {overwritten}"
            problems.append((str(source), f"output would overwrite the input{other}"))
            continue
        if output in first_source_by_output:
            first_source = first_source_by_output[output]
            reason = f"output name clashes with {first_source}; clean it in a separate run or rename it"
            problems.append((str(source), reason))
            continue
        first_source_by_output[output] = source
        jobs.append(Job(source, output, kind))

    kept = jobs if shard is None else jobs[shard[0] - 1 :: shard[1]]
    return Plan(jobs=kept, problems=problems, total_before_shard=len(jobs))


def file_job(source: Path, target: Path) -> Job:
    """The job of one input file cleaned to one named output file: a page to an image file, a document to a
    document of its own kind. ValueError, one line, when the output would overwrite the input or is of
    another kind."""
    from .documents import PDF_EXTENSIONS, TIFF_EXTENSIONS, is_document
    from .imageio import WRITE_EXTENSIONS

    if target.resolve() == source.resolve():
        raise ValueError(f"{source}: output would overwrite the input")
    kind = "document" if is_document(source) else "page"
    if kind == "page":
        allowed, what = WRITE_EXTENSIONS, "an image"
    elif source.suffix.lower() in PDF_EXTENSIONS:
        allowed, what = PDF_EXTENSIONS, "a PDF"
    else:
        allowed, what = TIFF_EXTENSIONS, "a TIFF"
    if target.suffix.lower() not in allowed:
        raise ValueError(f"{target}: {source} is written as {what}; name an output of that kind, or a folder "
                         f"(--split writes a document's pages as images)")
    return Job(source, target, kind)


def _output(source: Path, target: Path, extension: str, split: bool) -> tuple[Path, Path, str]:
    """(source, output, kind) of one input file: an image gets `extension`; a document keeps its kind's, or with
    `split` its stem only (pages add their number and extension)."""
    from .documents import is_document  # reads a TIFF's header only

    if not is_document(source):
        return source, target.with_suffix(extension), "page"
    if split:
        return source, target.with_suffix(""), "split"
    return source, target.with_suffix(source.suffix.lower()), "document"


def parse_shard(text: str) -> tuple[int, int]:
    """Read '--shard K/N' into (K, N); anything else raises ValueError with a one-line message."""
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip(), re.ASCII)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise ValueError(f"{SHARD_RULE}, got {text!r}")
    return int(match[1]), int(match[2])


def _expand_input(
    text: str, recursive: bool, outdir_resolved: Path, problems: list[tuple[str, str]]
) -> list[tuple[Path, Path]]:
    """(source, relative output path) pairs for one input; an existing path wins over reading it as a pattern."""
    path = Path(text)
    if path.exists():
        return _expand_path(path, recursive, outdir_resolved, problems)
    if not any(character in text for character in GLOB_CHARACTERS):
        problems.append((text, "no such file or folder"))
        return []
    matches = sorted(glob.glob(text, recursive=True))
    if not matches:
        problems.append((text, "no files match"))
        return []
    found: list[tuple[Path, Path]] = []
    for match in matches:
        found += _expand_path(Path(match), recursive, outdir_resolved, problems)
    return found


def _expand_path(
    path: Path, recursive: bool, outdir_resolved: Path, problems: list[tuple[str, str]]
) -> list[tuple[Path, Path]]:
    """A named file is taken whatever its extension (the decoder judges it); a folder is scanned for images."""
    if not path.is_dir():
        return [(path, Path(path.name))]
    # Skip outdir so a second run does not clean the first run's outputs, unless the folder itself lies
    # in outdir (e.g. `-o .`): then everything would be skipped, and the overwrite check is enough.
    inside_outdir = path.resolve().is_relative_to(outdir_resolved)
    images = _folder_images(path, recursive, None if inside_outdir else outdir_resolved)
    if not images:
        problems.append((str(path), _empty_folder_reason(path, recursive)))
    return images


def _folder_images(folder: Path, recursive: bool, excluded: Path | None) -> list[tuple[Path, Path]]:
    """Image files in `folder` (and its subfolders if recursive) with their path relative to it.

    Symlinked folders are not entered (followlinks=False), so a link to a parent cannot loop forever;
    symlinked files are taken.
    """
    images: list[tuple[Path, Path]] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        directory = Path(dirpath)
        if recursive:
            dirnames[:] = [
                name for name in dirnames if not name.startswith(".") and not _is_under(directory / name, excluded)
            ]
        else:
            dirnames.clear()
        for name in filenames:
            path = directory / name
            if _is_image(path) and not _is_under(path, excluded):
                images.append((path, path.relative_to(folder)))
    return images


def _is_image(path: Path) -> bool:
    """An image or a document, by name only: the decoder judges the content. Hidden files and non-regular files
    are not pages."""
    suffix = path.suffix.lower()
    return not path.name.startswith(".") and suffix in IMAGE_EXTENSIONS | DOCUMENT_EXTENSIONS and path.is_file()


def _is_under(path: Path, folder: Path | None) -> bool:
    return folder is not None and path.resolve().is_relative_to(folder)


def _empty_folder_reason(folder: Path, recursive: bool) -> str:
    has_subfolders = any(entry.is_dir() and not entry.name.startswith(".") for entry in folder.iterdir())
    if has_subfolders and not recursive:
        return "no images found (use --recursive for subfolders)"
    return "no images found"
