"""Run a model over a page of any size as fixed-size tiles, with a result equal to whole-page inference.

Each tile's core is read together with a halo of at least the model's receptive radius, so every kept
output pixel sees exactly what it would see in the whole page. Windows are clamped inside the page (never
padded past it), so the network's own zero padding falls on the page border in both cases, and window
origins sit on multiples of the model's `size_multiple`, so strided layers see the same grid. Tiles go to
the device in batches; the output is assembled on the CPU, so memory is bounded by tile size × batch.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch

from .imageio import to_unit_float

DEFAULT_TILE_CPU = 512
DEFAULT_TILE_CUDA = 1024
# Activation memory one batch of windows may take when the tile size is automatic, counted as the model's
# `features_per_pixel` float32 values per window pixel (which matches the growth of peak RSS with the window on
# the CPU): the least budget anywhere.
ACTIVATION_BYTES = 320 * 2**20
# On a CPU the page being cleaned (its samples and the output being filled) shares RAM with the activations, so
# a page smaller than the largest leaves its share to them: together they take at most this much, or the page
# and ACTIVATION_BYTES where the page alone is bigger. A 20000² 8-bit page (400 MB) gets ACTIVATION_BYTES. An
# 8-bit A4 page leaves the activations 692 MiB: the fast model runs it as one window (two at ACTIVATION_BYTES,
# computing 1.27 pixels per page pixel) and the default model as five strips, computing 1.21 (1.38).
CPU_MEMORY_BYTES = 700 * 2**20
# On a GPU the activations get this share of the device's total memory (at least ACTIVATION_BYTES), not of what
# is free at the moment: the tiles then depend on the page, the model and the device alone. ACTIVATION_BYTES
# alone, split over a batch of four, would leave both shipped models 1024-pixel cores on an A4 page, computing
# 1.88 pixels per page pixel (default) and 2.99 (fast, whose halo is 224 px); a quarter of a 16 GB GPU takes the
# whole page in one window. The budget counts float32 activations; in half precision they take about half.
GPU_MEMORY_SHARE = 0.25

try:  # glibc only; see release_freed_memory
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (AttributeError, OSError, TypeError):
    _malloc_trim = None


def activation_bytes(model: torch.nn.Module, pixels: int) -> float:
    """The activation memory of running `model` on windows with this many pixels in all."""
    return pixels * model.features_per_pixel * 4


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


PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with bf16 arithmetic in hardware (AVX-512 BF16 or AMX), where oneDNN runs bf16
    convolutions faster than float32; elsewhere bf16 is emulated and slower. Asks torch's CPU probes, which
    are private, so an older or newer torch without them counts as "no"."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe is not None and probe() for probe in probes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `run` (None: float32). 'auto' is half precision where the hardware has it
    (float16 on CUDA, bfloat16 on CPUs with native bf16) and float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def halo_for(model: torch.nn.Module) -> int:
    """The receptive radius rounded up to the model's size multiple."""
    return _round_up(model.receptive_radius, model.size_multiple)


def default_batch(device: torch.device) -> int:
    """Windows per model call when none is given: one on a CPU, where a batch only splits the memory budget
    into smaller windows with more halo to recompute; four on CUDA, to keep the GPU busy."""
    return 4 if device.type == "cuda" else 1


def release_freed_memory() -> None:
    """Hand the heap pages the last windows' activations freed back to the OS (a no-op without glibc; only CPU
    activations live on the heap). glibc keeps freed heap pages, and a thin network's many mid-sized
    activations fragment its heap from window to window: on a 12000² page the fast model's peak RSS grew by
    960 MB over the page for activations of 370 MB, and by 540 MB with this after each batch, at no cost in
    time (measured ad hoc around `run`; `bench/speed.py --huge` shows the effect)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def activation_budget(device: torch.device, page_bytes: int) -> int:
    """The bytes one batch of windows' activations may take beside a page whose samples and output take
    `page_bytes`: what CPU_MEMORY_BYTES leaves on a CPU, GPU_MEMORY_SHARE of a GPU's memory, and at least
    ACTIVATION_BYTES."""
    if device.type == "cpu":
        available = CPU_MEMORY_BYTES - page_bytes
    else:
        available = int(torch.cuda.get_device_properties(device).total_memory * GPU_MEMORY_SHARE)
    return max(ACTIVATION_BYTES, available)


def default_tile(model: torch.nn.Module, device: torch.device, page_shape: tuple[int, int], batch_size: int,
                 page_bytes: int) -> tuple[int, int]:
    """The core size (rows, columns) `run` uses when no tile is given, for a page whose samples and output
    take `page_bytes`. The whole page when its activations fit the `activation_budget` (no halo recomputed at
    all); else, of the grids of equal cores whose windows fit the budget `batch_size` at a time, the one that
    computes the fewest pixels, halo included (with ACTIVATION_BYTES the default model computes 1.38 pixels per
    A4 page pixel instead of 1.73 with 512-pixel squares). Grids whose biggest fitting cores are below the
    device's default tile are passed over (the page's own size where it is smaller), and if all are, that
    default tile is used as a square."""
    multiple = model.size_multiple
    height, width = (_round_up(side, multiple) for side in page_shape)
    budget = activation_budget(device, page_bytes)
    if activation_bytes(model, height * width) <= budget:
        return height, width
    halo = halo_for(model)
    least = DEFAULT_TILE_CUDA if device.type == "cuda" else DEFAULT_TILE_CPU
    window_pixels = budget / batch_size / activation_bytes(model, 1)
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
    edges (up to the size multiple) repeat the last one. The part inside is edge-padded with `np.pad`: 2.5 ms
    for a whole A4 page, where indexing it with repeated rows and columns took 62 ms (timed ad hoc), and a GPU
    that cleans 50 pages a second leaves this thread 20 ms per page for everything."""
    inside = page[oy:oy + win_h, ox:ox + win_w]
    missing_rows, missing_cols = win_h - inside.shape[0], win_w - inside.shape[1]
    if not (missing_rows or missing_cols):
        return inside
    return np.pad(inside, ((0, missing_rows), (0, missing_cols)), mode="edge")


def run(model: torch.nn.Module, page: np.ndarray, tile: int = 0, batch_size: int = 0,
        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
        out_dtype: type = np.float32, out: np.ndarray | None = None,
        on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Clean a H×W page (float in [0, 1], or uint8/uint16 samples) with `model` (already on `device`).

    tile: the side of the square core kept from each window, rounded up to the model's size multiple (0: the
    rectangle `default_tile` picks). batch_size: windows per model call (0: `default_batch`).
    dtype: autocast precision (`autocast_dtype`), None for float32.
    out_dtype: np.float32 for a page in [0, 1], or np.uint8, quantised on the device, so only one byte per
    pixel travels back and a huge page never exists as floats. out: an H×W array to fill instead of a new one,
    possibly `page` itself: results are held back until no later window reads their rows, so a huge uint8
    page is cleaned in its own memory. on_tile(done, total) is called after each batch.
    """
    if page.ndim != 2:
        raise ValueError(f"expected a 2-D page, got shape {page.shape}")
    height, width = page.shape
    if out is None:
        out = np.empty((height, width), dtype=out_dtype)
    elif out.shape != page.shape or out.dtype not in (np.uint8, np.float32):
        raise ValueError(f"out must be a {height}x{width} uint8 or float32 array")
    model.to(memory_format=torch.channels_last)  # same weights, laid out for faster convolutions (bench.py, CPU:
    # 34.30 s per A4 page against 39.75 s)
    device = torch.device(device)
    multiple = model.size_multiple
    batch_size = batch_size or default_batch(device)
    if tile:
        tile_h = tile_w = _round_up(tile, multiple)
    else:
        tile_h, tile_w = default_tile(model, device, page.shape, batch_size,
                                      page.nbytes + (0 if out is page else out.nbytes))
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
            result = model(inputs).float()
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
        if device.type == "cpu":
            release_freed_memory()
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
