"""Run a model over a page of any size as fixed-size tiles, with a result equal to whole-page inference.

`run` is a pure function of its arguments: each tile's core is read together with a halo of at least the
model's receptive radius, so every kept output pixel sees exactly what it would see in the whole page. Windows
are clamped inside the page (never padded past it), so the network's own zero padding falls on the page border in
both cases, and window origins sit on multiples of the model's `size_multiple`, so strided layers see the same
grid. Tiles go to the device in batches; the output is assembled on the CPU, so memory is bounded by tile size ×
batch. Beside it, `plan_tile` and `default_batch` turn a memory budget into the tile and batch to use.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .imageio import to_unit_float

# The smallest tile side `plan_tile` considers on each device (a page smaller than it is one tile): smaller
# cores would recompute more halo than the memory they save is worth.
LEAST_TILE_CPU = 512
LEAST_TILE_CUDA = 1024
# Activation memory one batch of windows may take, counted as the model's `features_per_pixel` float32 values per
# window pixel (which matches the growth of peak RSS with the window on a CPU): the least budget anywhere.
ACTIVATION_BYTES = 320 * 2**20
# In bf16 or fp16 the activations take this share of their float32 size, not half: the page, the per-pixel maps of
# the ink bias and the head's output stay float32 (the shipped model's peak RSS grows by 74 bytes per window pixel
# in bf16 on a CPU, against 134 in float32: 0.55).
HALF_PRECISION_SHARE = 0.56
# On a CPU the page being cleaned (its samples and the output being filled) shares RAM with the activations, so
# a page smaller than the largest leaves its share to them: together they take at most this much, or the page
# and ACTIVATION_BYTES where the page alone is bigger (a 20000² 8-bit page, 400 MB, gets ACTIVATION_BYTES; an
# 8-bit A4 page leaves the activations 692 MiB).
CPU_MEMORY_BYTES = 700 * 2**20
# On a GPU the activations get this share of the device's total memory (at least ACTIVATION_BYTES), not of what
# is free at the moment, so the tiles depend on the page, the model and the device alone; a quarter of a 16 GB
# GPU takes an A4 page in one window.
GPU_MEMORY_SHARE = 0.25


def activation_bytes(model: torch.nn.Module, pixels: int, dtype: torch.dtype | None = None) -> float:
    """The activation memory of running `model` on windows with this many pixels in all, in float32 or under
    autocast to `dtype`."""
    share = HALF_PRECISION_SHARE if dtype in (torch.bfloat16, torch.float16) else 1.0
    return pixels * model.features_per_pixel * 4 * share


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def halo_for(model: torch.nn.Module) -> int:
    """The receptive radius rounded up to the model's size multiple."""
    return _round_up(model.receptive_radius, model.size_multiple)


def default_batch(device: torch.device) -> int:
    """Windows per model call: one on a CPU, where a batch only splits the memory budget into smaller windows
    with more halo to recompute; four on CUDA, to keep the GPU busy."""
    return 4 if device.type == "cuda" else 1


def activation_budget(device: torch.device, page_bytes: int) -> int:
    """The bytes one batch of windows' activations may take beside a page whose samples and output take
    `page_bytes`: what CPU_MEMORY_BYTES leaves on a CPU, GPU_MEMORY_SHARE of a GPU's memory, and at least
    ACTIVATION_BYTES."""
    if device.type == "cpu":
        available = CPU_MEMORY_BYTES - page_bytes
    else:
        available = int(torch.cuda.get_device_properties(device).total_memory * GPU_MEMORY_SHARE)
    return max(ACTIVATION_BYTES, available)


def plan_tile(model: torch.nn.Module, device: torch.device, page_shape: tuple[int, int], batch_size: int,
              page_bytes: int, dtype: torch.dtype | None = None) -> tuple[int, int]:
    """The core size (rows, columns) of the tiles to run a page with, for a page whose samples and output take
    `page_bytes`, on a model run in float32 or autocast to `dtype` (half precision fits larger windows). The
    whole page when its activations fit the `activation_budget` (no halo recomputed at all); else, of the grids
    of equal cores whose windows fit the budget `batch_size` at a time, the one that
    computes the fewest pixels, halo included (fewer than squares of the same budget compute). Grids whose
    biggest fitting cores are below the device's least tile are passed over (the page's own size where it is
    smaller), and if all are, that least tile is used as a square."""
    multiple = model.size_multiple
    height, width = (_round_up(side, multiple) for side in page_shape)
    budget = activation_budget(device, page_bytes)
    if activation_bytes(model, height * width, dtype) <= budget:
        return height, width
    halo = halo_for(model)
    least = LEAST_TILE_CUDA if device.type == "cuda" else LEAST_TILE_CPU
    window_pixels = budget / batch_size / activation_bytes(model, 1, dtype)
    best: tuple[int, int, int] | None = None  # (pixels computed, core rows, core columns)
    for columns in range(1, width // multiple + 1):
        core_w = _round_up(math.ceil(width / columns), multiple)
        win_w = min(core_w + 2 * halo, width)
        core_h = int(window_pixels // win_w - 2 * halo) // multiple * multiple
        if core_w < min(least, width) or core_h < min(least, height):
            continue
        rows = math.ceil(height / core_h)
        core_h = _round_up(math.ceil(height / rows), multiple)
        computed = rows * columns * min(core_h + 2 * halo, height) * win_w
        if best is None or computed < best[0]:
            best = (computed, core_h, core_w)
    return (best[1], best[2]) if best else (least, least)


def _windows(height: int, width: int, tile: tuple[int, int], halo: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Window size and the top-left corners of the tile cores covering a (padded) page."""
    win_h, win_w = min(tile[0] + 2 * halo, height), min(tile[1] + 2 * halo, width)
    return win_h, win_w, [(y, x) for y in range(0, height, tile[0]) for x in range(0, width, tile[1])]


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _device_batch(windows: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """A batch of windows as B×1×H×W floats in [0, 1] on `device`. 8-bit windows travel as bytes and are
    scaled there (the same arithmetic as `imageio.to_unit_float`, which converts every other type here)."""
    stack = np.stack(windows)
    if stack.dtype != np.uint8:
        stack = to_unit_float(stack)
    samples = torch.from_numpy(stack)[:, None]
    if device.type == "cuda":
        samples = samples.pin_memory()
    samples = samples.to(device, non_blocking=True)
    return samples.float().div_(255) if samples.dtype == torch.uint8 else samples


def _window(page: np.ndarray, oy: int, ox: int, win_h: int, win_w: int) -> np.ndarray:
    """One window of the page (it starts inside the page); rows and columns past the page's bottom and right
    edges (up to the size multiple) repeat the last one. `np.pad` does this many times faster than indexing with
    repeated rows and columns, which matters on a GPU, where this thread has milliseconds per page."""
    inside = page[oy:oy + win_h, ox:ox + win_w]
    missing_rows, missing_cols = win_h - inside.shape[0], win_w - inside.shape[1]
    if not (missing_rows or missing_cols):
        return inside
    return np.pad(inside, ((0, missing_rows), (0, missing_cols)), mode="edge")


def run(model: torch.nn.Module, page: np.ndarray, tile: tuple[int, int], batch_size: int,
        device: torch.device, dtype: torch.dtype | None = None, out_dtype: type = np.float32,
        out: np.ndarray | None = None, on_batch: Callable[[int, int], None] | None = None,
        binary: bool = False) -> np.ndarray:
    """Clean a H×W page (float in [0, 1], or uint8/uint16 samples) with `model` (already on `device`).

    tile: the (rows, columns) of the core kept from each window, rounded up to the model's size multiple.
    batch_size: windows per model call. dtype: autocast precision, None for float32.
    out_dtype: np.float32 for a page in [0, 1], or np.uint8, quantised on the device, so only one byte per
    pixel travels back and a huge page never exists as floats. out: an H×W array to fill instead of a new one,
    possibly `page` itself: results are held back until no later window reads their rows, so a huge uint8
    page is cleaned in its own memory. on_batch(done, total) is called after each batch of windows. binary: ask
    a model that has a binary style for it.
    """
    if page.ndim != 2:
        raise ValueError(f"expected a 2-D page, got shape {page.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    height, width = page.shape
    if out is None:
        out = np.empty((height, width), dtype=out_dtype)
    elif out.shape != page.shape or out.dtype not in (np.uint8, np.float32):
        raise ValueError(f"out must be a {height}x{width} uint8 or float32 array")
    multiple = model.size_multiple
    tile_h, tile_w = (_round_up(side, multiple) for side in tile)
    halo = halo_for(model)
    # The page is seen as if edge-padded to a multiple of the model's size multiple.
    padded_h, padded_w = _round_up(height, multiple), _round_up(width, multiple)
    win_h, win_w, cores = _windows(padded_h, padded_w, (tile_h, tile_w), halo)
    origins = [(min(max(y - halo, 0), padded_h - win_h), min(max(x - halo, 0), padded_w - win_w)) for y, x in cores]
    precision = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    quantise = out.dtype == np.uint8
    held: list[tuple[int, int, np.ndarray]] = []  # finished cores whose rows a later window may still read
    done = 0
    for batch in _batches(list(zip(cores, origins)), batch_size):
        inputs = _device_batch([_window(page, oy, ox, win_h, win_w) for _, (oy, ox) in batch], device)
        with torch.inference_mode(), precision:
            result = model(inputs, binary).float()
            if quantise:  # imageio.to_uint8's arithmetic, done on the device, in place (no second float page)
                result = result.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
        result = result.cpu().numpy()[:, 0]
        for ((y, x), (oy, ox)), window in zip(batch, result):
            y_end, x_end = min(y + tile_h, height), min(x + tile_w, width)
            held.append((y, x, window[y - oy:y_end - oy, x - ox:x_end - ox]))
        done += len(batch)
        # Windows start at non-decreasing rows, so rows above the next window's top are never read again.
        next_top = origins[done][0] if done < len(cores) else padded_h
        still_read = []
        for y, x, core in held:
            if y + core.shape[0] <= next_top:
                out[y:y + core.shape[0], x:x + core.shape[1]] = core
            else:
                still_read.append((y, x, core))
        held = still_read
        if on_batch:
            on_batch(done, len(cores))
    return out


def run_whole(model: torch.nn.Module, page: np.ndarray, device: torch.device | str = "cpu",
              binary: bool = False) -> np.ndarray:
    """The reference: the model over the whole edge-padded page in one piece (small pages and tests). `run`
    equals this to float precision."""
    multiple = model.size_multiple
    height, width = page.shape
    pad = ((0, -height % multiple), (0, -width % multiple))
    padded = np.pad(to_unit_float(page), pad, mode="edge")
    with torch.inference_mode():
        result = model(torch.from_numpy(padded)[None, None].to(device), binary)
    return result[0, 0, :height, :width].float().cpu().numpy()
