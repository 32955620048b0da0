"""Training data: sources of (dirty, clean) pairs or of clean pages alone, pages grouped by shared clean target,
split by group into training, validation and sealed parts, and augmented patches sampled across sources."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .imageio import (
    READ_EXTENSIONS,
    PageError,
    as_uint8,
    read_gray,
    read_page,
    to_uint8,
    to_unit_float,
)

SOURCE_OPTIONS = ("weight", "val", "sealed")


class PairingError(Exception):
    """Problems with the training pairs, all of them listed, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) with the page pairs:\n" +
                         "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Pair:
    name: str  # relative path without extension: what pairs a dirty page with its clean one
    dirty: Path
    clean: Path


def _images_by_key(folder: Path) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    problems = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in READ_EXTENSIONS or path.name.startswith(".") or not path.is_file():
            continue
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            problems.append(f"{path}: same name as {found[key]} (ambiguous pairing)")
        else:
            found[key] = path
    return found, problems


def find_pairs(dirty_dir: str | Path, clean_dir: str | Path) -> list[Pair]:
    """Pair files by relative path and stem (dirty/a/1.png with clean/a/1.jpg). Raises PairingError
    listing every file without a partner."""
    dirty_dir, clean_dir = Path(dirty_dir), Path(clean_dir)
    problems = [f"{d}: no such folder" for d in (dirty_dir, clean_dir) if not d.is_dir()]
    if problems:
        raise PairingError(problems)
    dirty, problems_dirty = _images_by_key(dirty_dir)
    clean, problems_clean = _images_by_key(clean_dir)
    problems = problems_dirty + problems_clean
    problems += [f"{dirty[k]}: no clean partner in {clean_dir}" for k in sorted(dirty.keys() - clean.keys())]
    problems += [f"{clean[k]}: no dirty partner in {dirty_dir}" for k in sorted(clean.keys() - dirty.keys())]
    if not dirty and not clean:
        problems.append(f"{dirty_dir}: no images found")
    if problems:
        raise PairingError(problems)
    return [Pair(k, dirty[k], clean[k]) for k in sorted(dirty)]


def load_pairs(pairs: list[Pair], on_progress: Callable[[int, int], None] | None = None
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read every pair, checking all of them before failing: PairingError lists each unreadable file and
    each size mismatch."""
    pages, problems = [], []
    for i, pair in enumerate(pairs):
        images = []
        for path in dict.fromkeys((pair.dirty, pair.clean)):  # once when a page is its own target
            try:
                images.append(read_page(path))
            except PageError as exc:
                problems.append(f"{path}: {exc}")
        if len(images) == 1 and pair.dirty == pair.clean:
            images.append(images[0])
        if len(images) == 2:
            (dirty, clean) = images
            if dirty.shape != clean.shape:
                problems.append(f"{pair.dirty}: size {dirty.shape[1]}x{dirty.shape[0]} does not match "
                                f"{pair.clean} ({clean.shape[1]}x{clean.shape[0]})")
            pages.append((dirty, clean))
        if on_progress:
            on_progress(i + 1, len(pairs))
    if problems:
        raise PairingError(problems)
    return pages


def page_groups(cleans: list[np.ndarray]) -> list[int]:
    """A group id per page: pages whose clean targets are pixel-identical share one (the same text under
    different noise is not a held-out page)."""
    ids: dict[bytes, int] = {}
    groups = []
    for clean in cleans:
        pixels = clean if clean.dtype == np.uint8 else to_uint8(clean)
        digest = hashlib.sha256(pixels.tobytes() + str(clean.shape).encode()).digest()
        groups.append(ids.setdefault(digest, len(ids)))
    return groups


@dataclass(frozen=True)
class Split:
    """Indices of the pages that train, that validate (choose the epoch, compare recipes) and that stay sealed
    (never trained or validated on: scored once per model that ships, so its figure is not inflated by the
    many choices made on the validation pages)."""

    train: list[int]
    val: list[int]
    sealed: list[int] = field(default_factory=list)


def split_by_group(groups: list[int], val_fraction: float, seed: int = 0, sealed_fraction: float = 0.0) -> Split:
    """Split so that no page group straddles two parts: the groups are shuffled by `seed`, the first
    `val_fraction` of them validate and the next `sealed_fraction` are sealed (so adding a sealed part leaves the
    validation groups as they were); at least one group always trains."""
    distinct = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(distinct)

    def count(fraction: float, room: int) -> int:
        wanted = max(round(len(distinct) * fraction), 1 if fraction > 0 else 0)
        return max(0, min(wanted, room))

    n_val = count(val_fraction, len(distinct) - 1)
    n_sealed = count(sealed_fraction, len(distinct) - 1 - n_val)
    val_groups, sealed_groups = set(distinct[:n_val]), set(distinct[n_val:n_val + n_sealed])
    return Split(train=[i for i, g in enumerate(groups) if g not in val_groups | sealed_groups],
                 val=[i for i, g in enumerate(groups) if g in val_groups],
                 sealed=[i for i, g in enumerate(groups) if g in sealed_groups])


@dataclass(frozen=True)
class Source:
    """A folder of training pages: (dirty, clean) pairs, or clean pages alone (`dirty` None), every patch of
    which is corrupted on the fly by the noise recipe. `weight` sets its share of the patches against the other
    sources (within a source, pages are drawn by area); `val` and `sealed` are the fractions of its page groups
    held out for validation and kept sealed (None: the run's own fractions)."""

    clean: Path
    dirty: Path | None = None
    weight: float = 1.0
    val: float | None = None
    sealed: float | None = None

    def describe(self) -> dict:
        """The source as a model file records it (paths as given)."""
        found = {"dirty": str(self.dirty) if self.dirty else None, "clean": str(self.clean), "weight": self.weight}
        return found | {k: getattr(self, k) for k in ("val", "sealed") if getattr(self, k) is not None}


def parse_source(text: str, pairs: bool = True) -> Source:
    """Read a source as typed on the command line: DIRTY:CLEAN (pairs) or CLEAN (clean pages alone), then
    optionally :WEIGHT or :key=value,... with keys weight, val and sealed (e.g. `scans:targets:weight=2,val=0`).
    ValueError with a one-line message for anything else."""
    parts = text.split(":")
    folders = 2 if pairs else 1
    shape = "DIRTY:CLEAN[:OPTIONS]" if pairs else "CLEAN[:OPTIONS]"
    if len(parts) not in (folders, folders + 1) or not all(parts[:folders]):
        raise ValueError(f"expected {shape}, got {text!r}")
    options: dict[str, float] = {}
    if len(parts) > folders:
        for item in parts[folders].split(","):
            key, has_value, value = item.partition("=")
            key, value = ("weight", key) if not has_value else (key.strip(), value)
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if key not in SOURCE_OPTIONS or not math.isfinite(number) or number < 0:
                raise ValueError(f"bad source option {item!r} in {text!r}: expected WEIGHT or key=value with keys "
                                 f"{', '.join(SOURCE_OPTIONS)} and values >= 0")
            options[key] = number
    if options.get("weight", 1.0) <= 0:
        raise ValueError(f"the weight must be above 0 in {text!r}")
    for key in ("val", "sealed"):
        if options.get(key, 0.0) >= 1:
            raise ValueError(f"{key} must be a fraction below 1 in {text!r}")
    dirty, clean = (Path(parts[0]), Path(parts[1])) if pairs else (None, Path(parts[0]))
    return Source(clean=clean, dirty=dirty, **options)


def find_pages(folder: str | Path) -> list[Pair]:
    """The images of a folder of clean pages, each paired with itself."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PairingError([f"{folder}: no such folder"])
    found, problems = _images_by_key(folder)
    if not found:
        problems.append(f"{folder}: no images found")
    if problems:
        raise PairingError(problems)
    return [Pair(key, path, path) for key, path in sorted(found.items())]


def load_source_pages(pairs: list[Pair]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read pairs for training as 8-bit pages (a quarter of the memory of floats; colour and 16-bit pages are
    converted as `clean` converts them, then rounded), checking all of them before failing like `load_pairs`."""
    pages, problems = [], []
    for pair in pairs:
        images = []
        for path in dict.fromkeys((pair.dirty, pair.clean)):
            try:
                gray = read_gray(path)
                images.append(as_uint8(gray))
            except PageError as exc:
                problems.append(f"{path}: {exc}")
        if len(images) == 1 and pair.dirty == pair.clean:
            images.append(images[0])
        if len(images) == 2:
            if images[0].shape != images[1].shape:
                problems.append(f"{pair.dirty}: size {images[0].shape[1]}x{images[0].shape[0]} does not match "
                                f"{pair.clean} ({images[1].shape[1]}x{images[1].shape[0]})")
            pages.append((images[0], images[1]))
    if problems:
        raise PairingError(problems)
    return pages


def is_binary(page: np.ndarray) -> bool:
    """True for a page of pure black and white (an ink mask, as binarisation ground truth is)."""
    return bool(np.isin(page, (0, 255) if page.dtype == np.uint8 else (0.0, 1.0)).all())


@dataclass
class PageSet:
    """Training pages of one source as the sampler draws them: `pages` are (dirty, clean) arrays (for clean
    pages alone, the clean page twice), `synthetic_only` marks a source whose dirty side is always made by the
    noise recipe."""

    pages: list[tuple[np.ndarray, np.ndarray]]
    weight: float = 1.0
    synthetic_only: bool = False


class PatchSampler:
    """Random aligned (dirty, clean) patches from several sources, with augmentations that keep text plausible:
    flips, quarter turns and a rescale of both images by up to `max_scale` (text sizes vary between scanners
    and dpi). A rescaled ink mask (binary target) is thresholded again, so it stays an ink mask; a grey target
    enlarged by s gets its edges steepened s times, so they stay as sharp as a page scanned at that size.

    With `synthesize`, a `synthetic_fraction` of the patches (all of them for a synthetic-only source) get their
    dirty side made from the clean one by a known corruption process (the denoising-autoencoder idea), instead
    of taken from the real scan.
    """

    def __init__(self, sets: list[PageSet] | list[tuple[np.ndarray, np.ndarray]], patch_size: int,
                 max_scale: float = 1.0, rescale_probability: float = 0.5,
                 synthesize: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 synthetic_fraction: float = 0.0):
        if sets and not isinstance(sets[0], PageSet):
            sets = [PageSet(list(sets))]
        sets = [s for s in sets if s.pages]
        if not sets:
            raise ValueError("no training pages")
        if synthesize is None and any(s.synthetic_only for s in sets):
            raise ValueError("clean pages alone need a noise recipe to corrupt them")
        self.sets = sets
        self.patch_size = patch_size
        self.max_scale = max_scale
        self.rescale_probability = rescale_probability
        self.synthesize = synthesize
        self.synthetic_fraction = synthetic_fraction if synthesize else 0.0
        weights = np.array([s.weight for s in sets], dtype=np.float64)
        self.set_weights = weights / weights.sum()
        self.page_weights = []
        for page_set in sets:
            areas = np.array([d.size for d, _ in page_set.pages], dtype=np.float64)
            self.page_weights.append(areas / areas.sum())
        self.binary = [[is_binary(clean) for _, clean in s.pages] for s in sets]

    def _crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, bool]:
        which = rng.choice(len(self.sets), p=self.set_weights)
        page_set = self.sets[which]
        index = rng.choice(len(page_set.pages), p=self.page_weights[which])
        dirty, clean = page_set.pages[index]
        height, width = dirty.shape
        p = self.patch_size
        scale = 1.0
        if rng.random() < self.rescale_probability:
            scale = float(np.exp(rng.uniform(-np.log(self.max_scale), np.log(self.max_scale))))
        size = min(max(2, round(p / scale)), height, width)
        y, x = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
        crops = [to_unit_float(img[y:y + size, x:x + size]) for img in (dirty, clean)]
        if size != p:
            interpolation = cv2.INTER_AREA if size > p else cv2.INTER_LINEAR
            crops = [cv2.resize(c, (p, p), interpolation=interpolation) for c in crops]
            if self.binary[which][index]:
                crops[1] = (crops[1] >= 0.5).astype(np.float32)
            elif size < p:
                crops[1] = np.clip((crops[1] - 0.5) * (p / size) + 0.5, 0, 1)
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        crops = [np.rot90(c, turns) for c in crops]
        if flip:
            crops = [c[:, ::-1] for c in crops]
        binary = self.binary[which][index]
        if page_set.synthetic_only or (self.synthetic_fraction and rng.random() < self.synthetic_fraction):
            return self.synthesize(np.ascontiguousarray(crops[1]), rng), crops[1], binary
        return crops[0], crops[1], binary

    def batch(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Inputs and targets, two float32 arrays of shape (size, 1, patch, patch), and for each patch 1.0 when its
        page's target is an ink mask (what a model's binary style learns from), else 0.0."""
        dirty, clean, binary = zip(*(self._crop(rng) for _ in range(size)))
        return (np.stack(dirty)[:, None].astype(np.float32), np.stack(clean)[:, None].astype(np.float32),
                np.array(binary, np.float32))


def held_out_pairs(info: dict, part: str = "val") -> list[Pair]:
    """The pairs a model's training run held out, found again from what its file records (`info["data"]`): the
    page groups of each source's `part` ("val" or "sealed"), split as the run split them, plus, for "val", the
    sources it validated on whole. Raises PairingError when the recorded folders are not there."""
    if part not in ("val", "sealed"):
        raise ValueError(f"part must be 'val' or 'sealed', got {part!r}")
    data = info.get("data") or {}
    seed = int(data.get("seed", (info.get("options") or {}).get("seed", 0)))
    sources = data.get("sources")
    if sources is None and data.get("clean"):  # a file written before several sources: one pair folder
        sources = [{"dirty": data.get("dirty"), "clean": data["clean"], "val": data.get("val_fraction", 0.2),
                    "sealed": 0.0}]
    found: list[Pair] = []
    for source in sources or []:
        dirty = source.get("dirty")
        if source.get("use") == "validation":
            found += find_pairs(dirty, source["clean"]) if part == "val" else []
            continue
        if not dirty or str(dirty).startswith("none"):  # clean pages alone: no real dirty pages to score
            continue
        pairs = find_pairs(dirty, source["clean"])
        targets = load_source_pages([Pair(pair.name, pair.clean, pair.clean) for pair in pairs])  # groups need these
        groups = page_groups([clean for _, clean in targets])
        val = source.get("val", data.get("val_fraction", 0.2))
        sealed = source.get("sealed", data.get("sealed_fraction", 0.0))
        split = split_by_group(groups, float(val), seed, float(sealed))
        found += [pairs[i] for i in (split.val if part == "val" else split.sealed)]
    return found
