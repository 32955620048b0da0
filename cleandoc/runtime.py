"""Where and how a model runs: the device, the arithmetic precision and the CPU threads, decided here and only
here (the `Cleaner` asks once, at load)."""

from __future__ import annotations

import ctypes
import os

import torch

from .options import PRECISIONS

try:  # glibc only; see release_freed_memory
    _malloc_trim = ctypes.CDLL(None).malloc_trim
except (AttributeError, OSError, TypeError):
    _malloc_trim = None


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


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with bf16 arithmetic in hardware (AVX-512 BF16 or AMX), where oneDNN runs bf16
    convolutions faster than float32; elsewhere bf16 is emulated and slower. Asks torch's CPU probes, which
    are private, so an older or newer torch without them counts as "no"."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(probe is not None and probe() for probe in probes)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a model runs in (None: float32). 'auto' is half precision where the hardware has it
    (float16 on CUDA, bfloat16 on CPUs with native bf16) and float32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (use {', '.join(PRECISIONS)})")
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def usable_cores() -> int:
    """The cores this process may run on: the CPU set a container or `taskset` leaves it, not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> None:
    """The CPU threads torch computes with (None: torch's own choice, one per core)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def release_freed_memory() -> None:
    """Hand the heap pages the last tiles' activations freed back to the OS (a no-op without glibc; only CPU
    activations live on the heap). glibc keeps freed heap pages, and a thin network's many mid-sized activations
    fragment its heap from tile to tile, so without this a huge page's peak memory grows far past what its
    activations need (`bench/speed.py --huge` shows the effect), at no cost in time."""
    if _malloc_trim is not None:
        _malloc_trim(0)
