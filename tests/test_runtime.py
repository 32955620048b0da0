"""Where and how a model runs: devices, precisions, threads and the heap, decided in one place."""

from __future__ import annotations

import platform

import pytest
import torch

from cleandoc import runtime


def test_pick_device_cpu():
    assert runtime.pick_device("cpu") == torch.device("cpu")
    assert runtime.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_pick_device_cuda_missing(name):
    with pytest.raises(ValueError, match="not available"):
        runtime.pick_device(name)


@pytest.mark.parametrize("name", ["tpu", "bogus", "meta", "", "cpu:x"])
def test_pick_device_rejects_unknown(name):
    with pytest.raises(ValueError):
        runtime.pick_device(name)


@pytest.mark.parametrize(("precision", "dtype"), [("fp32", None), ("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_explicit_precision_is_taken_as_given(precision, dtype):
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert runtime.autocast_dtype(precision, device) == dtype


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_half_on_cuda_and_bf16_only_on_cpus_that_have_it(native, monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert runtime.autocast_dtype("auto", torch.device("cuda")) == torch.float16
    assert runtime.autocast_dtype("auto", torch.device("cpu")) == (torch.bfloat16 if native else None)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        runtime.autocast_dtype("half", torch.device("cpu"))


def test_native_bf16_probe_reads_torch_and_says_no_without_its_probes(monkeypatch):
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert runtime.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert runtime.cpu_has_native_bf16() is True
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name)
    assert runtime.cpu_has_native_bf16() is False


def test_glibc_malloc_trim_is_found_where_glibc_runs():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert runtime._malloc_trim is not None
    runtime.release_freed_memory()


def test_threads_are_set_when_asked_and_refused_below_one(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    runtime.set_threads(None)
    runtime.set_threads(3)
    assert calls == [3]
    with pytest.raises(ValueError, match="at least 1"):
        runtime.set_threads(0)
