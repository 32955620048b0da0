"""Training data: find (dirty, clean) pairs, group pages that share a clean target, split by group, and
sample augmented patches."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .imageio import READ_EXTENSIONS, PageError, read_page


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
        digest = hashlib.sha256(np.rint(clean * 255).astype(np.uint8).tobytes() + str(clean.shape).encode()).digest()
        groups.append(ids.setdefault(digest, len(ids)))
    return groups


def split_by_group(groups: list[int], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (train, validation) such that no page group straddles the split."""
    distinct = sorted(set(groups))
    rng = np.random.default_rng(seed)
    rng.shuffle(distinct)
    n_val = min(round(len(distinct) * val_fraction), len(distinct) - 1)
    if val_fraction > 0 and len(distinct) > 1:
        n_val = max(n_val, 1)
    val_groups = set(distinct[:n_val])
    train = [i for i, g in enumerate(groups) if g not in val_groups]
    val = [i for i, g in enumerate(groups) if g in val_groups]
    return train, val


class PatchSampler:
    """Random aligned (dirty, clean) patches with augmentations that keep text plausible: flips, quarter
    turns and a mild rescale of both images (text sizes vary between scanners and dpi).

    With `synthesize`, a `synthetic_fraction` of the patches get their dirty side made from the clean one by a
    known corruption process (the denoising-autoencoder idea), instead of taken from the real scan.
    """

    def __init__(self, pages: list[tuple[np.ndarray, np.ndarray]], patch_size: int, max_scale: float = 1.0,
                 rescale_probability: float = 0.5,
                 synthesize: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
                 synthetic_fraction: float = 0.0):
        if not pages:
            raise ValueError("no training pages")
        self.pages = pages
        self.patch_size = patch_size
        self.max_scale = max_scale
        self.rescale_probability = rescale_probability
        self.synthesize = synthesize
        self.synthetic_fraction = synthetic_fraction if synthesize else 0.0
        areas = np.array([d.size for d, _ in pages], dtype=np.float64)
        self.weights = areas / areas.sum()

    def _crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        dirty, clean = self.pages[rng.choice(len(self.pages), p=self.weights)]
        height, width = dirty.shape
        p = self.patch_size
        scale = 1.0
        if rng.random() < self.rescale_probability:
            scale = float(np.exp(rng.uniform(-np.log(self.max_scale), np.log(self.max_scale))))
        size = min(max(2, round(p * scale)), height, width)
        y, x = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
        crops = [img[y:y + size, x:x + size] for img in (dirty, clean)]
        if size != p:
            interpolation = cv2.INTER_AREA if size > p else cv2.INTER_LINEAR
            crops = [cv2.resize(c, (p, p), interpolation=interpolation) for c in crops]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        crops = [np.rot90(c, turns) for c in crops]
        if flip:
            crops = [c[:, ::-1] for c in crops]
        if self.synthetic_fraction and rng.random() < self.synthetic_fraction:
            return self.synthesize(np.ascontiguousarray(crops[1]), rng), crops[1]
        return crops[0], crops[1]

    def batch(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Two float32 arrays of shape (size, 1, patch, patch): inputs and targets."""
        dirty, clean = zip(*(self._crop(rng) for _ in range(size)))
        return np.stack(dirty)[:, None].astype(np.float32), np.stack(clean)[:, None].astype(np.float32)
