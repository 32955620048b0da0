"""Run a model over a page of any size as fixed-size tiles, with a result equal to whole-page inference.

Each tile's core is read together with a halo of at least the model's receptive radius, so every kept
output pixel sees exactly what it would see in the whole page. Windows are clamped inside the page (never
padded past it), so the network's own zero padding falls on the page border in both cases, and window
origins sit on multiples of the model's `size_multiple`, so strided layers see the same grid. Tiles go to
the device in batches; the output is assembled on the CPU, so memory is bounded by tile size × batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .imageio import to_uint8, to_unit_float

DEFAULT_TILE_CPU = 512
DEFAULT_TILE_CUDA = 1024


def pick_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'; ValueError for one that is not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {name!r} is not available on this machine")
    return device


def halo_for(model: torch.nn.Module) -> int:
    """The receptive radius rounded up to the model's size multiple."""
    multiple = model.size_multiple
    return math.ceil(model.receptive_radius / multiple) * multiple


def _windows(height: int, width: int, tile: int, halo: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Window size and the top-left corners of the tile cores covering a (padded) page."""
    win_h, win_w = min(tile + 2 * halo, height), min(tile + 2 * halo, width)
    return win_h, win_w, [(y, x) for y in range(0, height, tile) for x in range(0, width, tile)]


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def run(model: torch.nn.Module, page: np.ndarray, tile: int = 0, batch_size: int = 4,
        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
        out_dtype: type = np.float32, on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Clean a H×W page (float in [0, 1], or uint8/uint16 samples) with `model` (already on `device`).

    tile: the core size kept from each window (0 picks a size for the device); rounded up to the
    model's size multiple. dtype: autocast precision (e.g. torch.float16 on CUDA), None for float32.
    out_dtype: np.float32 for a page in [0, 1], or np.uint8 to quantise tile by tile, so that a huge page
    never exists as floats (only one batch of windows does). on_tile(done, total) is called after each batch.
    """
    if page.ndim != 2:
        raise ValueError(f"expected a 2-D page, got shape {page.shape}")
    model.to(memory_format=torch.channels_last)  # same weights, laid out for faster convolutions (bench.py, CPU:
    # 34.30 s per A4 page against 39.75 s)
    device = torch.device(device)
    multiple = model.size_multiple
    tile = tile or (DEFAULT_TILE_CUDA if device.type == "cuda" else DEFAULT_TILE_CPU)
    tile = math.ceil(tile / multiple) * multiple
    halo = halo_for(model)
    height, width = page.shape
    # The page is seen as if edge-padded to a multiple of the model's size multiple.
    padded_h, padded_w = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    win_h, win_w, cores = _windows(padded_h, padded_w, tile, halo)
    rows = np.minimum(np.arange(padded_h), height - 1)
    cols = np.minimum(np.arange(padded_w), width - 1)
    out = np.empty((height, width), dtype=out_dtype)
    done = 0
    for batch in _batches(cores, batch_size):
        origins = [(min(max(y - halo, 0), padded_h - win_h), min(max(x - halo, 0), padded_w - win_w))
                   for y, x in batch]
        stack = np.stack([page[np.ix_(rows[oy:oy + win_h], cols[ox:ox + win_w])] for oy, ox in origins])
        inputs = torch.from_numpy(to_unit_float(stack))[:, None].to(device, non_blocking=True)
        precision = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), precision:
            result = model(inputs).float().cpu().numpy()[:, 0]
        for (y, x), (oy, ox), window in zip(batch, origins, result):
            y_end, x_end = min(y + tile, height), min(x + tile, width)
            core = window[y - oy:y_end - oy, x - ox:x_end - ox]
            out[y:y_end, x:x_end] = to_uint8(core) if out_dtype == np.uint8 else core
        done += len(batch)
        if on_tile:
            on_tile(done, len(cores))
    return out


def run_whole(model: torch.nn.Module, page: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """The reference: the model over the whole edge-padded page in one piece (small pages, tests, training
    validation). `run` equals this to float precision."""
    multiple = model.size_multiple
    height, width = page.shape
    pad = ((0, -height % multiple), (0, -width % multiple))
    padded = np.pad(to_unit_float(page), pad, mode="edge")
    with torch.inference_mode():
        result = model(torch.from_numpy(padded)[None, None].to(device))
    return result[0, 0, :height, :width].float().cpu().numpy()
