"""Tiled inference must equal whole-page inference, for any page size, tile size and batch size."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from cleandoc import tiling
from cleandoc.models import build_model
from cleandoc.store import SHIPPED_MODELS, load_model

CONFIGS = {
    "unet": {"arch": "unet", "widths": [8, 16]},
    "dae": {"arch": "dae", "widths": [8, 16]},
}

TOLERANCE = 1e-4
CPU = torch.device("cpu")


def tiled(model, page, tile: int = 0, batch_size: int = 1, **options) -> np.ndarray:
    """`tiling.run` with square tiles of this side, or (0) the tiles `plan_tile` picks for the page."""
    shape = (tile, tile) if tile else tiling.plan_tile(model, CPU, page.shape, batch_size, page.nbytes)
    return tiling.run(model, page, shape, batch_size, CPU, **options)


_MODELS: dict[str, torch.nn.Module] = {}


def tiny_model(arch: str) -> torch.nn.Module:
    if arch not in _MODELS:
        torch.manual_seed(1234)
        _MODELS[arch] = build_model(CONFIGS[arch]).eval()
    return _MODELS[arch]


def make_page(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Noise on a diagonal gradient with a few dark "text" bars and a bright blob: structure at several scales."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    page = 0.35 + 0.4 * (yy / max(height, 1)) * (xx / max(width, 1))
    page += 0.2 * rng.random((height, width), dtype=np.float32)
    for _ in range(4):
        y, x = rng.integers(0, height), rng.integers(0, width)
        page[y:y + 3, x:x + 15] = 0.05
    page[(yy - height / 3) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 4) ** 2] += 0.3
    return np.clip(page, 0.0, 1.0).astype(np.float32)


SMALL_PAGES = [(1, 1), (3, 900), (900, 3), (64, 64)]
ALL_TILES = [8, 20, 24, 64, 0]

# Every tile size and batch size on the small pages; on the bigger ones a selection, since tile 8 over a
# 300×517 page means thousands of forward passes.
CASES = (
    [(h, w, tile, batch) for h, w in SMALL_PAGES for tile in ALL_TILES for batch in (1, 3)]
    + [(257, 131, 20, 3), (257, 131, 24, 1), (257, 131, 64, 1), (257, 131, 64, 3), (257, 131, 0, 1), (257, 131, 0, 3)]
    + [(300, 517, 48, 3), (300, 517, 64, 1), (300, 517, 0, 1), (300, 517, 0, 3)]
)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize(("height", "width", "tile", "batch"), CASES)
def test_tiled_equals_whole(arch, height, width, tile, batch):
    model = tiny_model(arch)
    page = make_page(height, width, seed=height * 1000 + width)
    whole = tiling.run_whole(model, page)
    result = tiled(model, page, tile=tile, batch_size=batch)
    assert result.shape == whole.shape == (height, width)
    assert np.abs(result - whole).max() <= TOLERANCE


@pytest.mark.parametrize("config", [
    {"arch": "unet", "widths": [8, 16], "unshuffle": 3, "convs": 1},  # size multiple 6, not a power of two
    {"arch": "unet", "widths": [8, 16, 32], "unshuffle": 1, "convs": 1},
    {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1, "kernel": 3},  # per-pixel filters
    {"arch": "dae", "widths": [8], "convs": 2},
    # the bias depends on the input's contrast around each pixel: the halo and size multiple cover its cells
    {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1, "ink_bias": 0.1, "faint_ink_bias": 1.5},
    {"arch": "dae", "widths": [8], "convs": 1, "ink_bias": 0.1, "faint_ink_bias": 1.5},  # they reach further
])
def test_tiled_equals_whole_other_configs(config):
    torch.manual_seed(7)
    model = build_model(config).eval()
    page = make_page(71, 97, seed=3)
    whole = tiling.run_whole(model, page)
    for tile, batch in [(10, 2), (32, 3), (0, 1)]:
        assert np.abs(tiled(model, page, tile=tile, batch_size=batch) - whole).max() <= TOLERANCE


def test_tiled_equals_whole_in_the_binary_style():
    torch.manual_seed(7)
    model = build_model({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1, "binary_style": True}).eval()
    for film in model.binary_film:
        torch.nn.init.normal_(film, std=0.5)
    page = make_page(71, 97, seed=3)
    whole = tiling.run_whole(model, page, binary=True)
    assert np.abs(whole - tiling.run_whole(model, page)).max() > 0.05  # the style is in use
    for tile, batch in [(10, 2), (32, 3), (0, 1)]:
        assert np.abs(tiled(model, page, tile=tile, batch_size=batch, binary=True) - whole).max() <= TOLERANCE


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_output_shape_dtype_range_and_input_untouched(arch):
    model = tiny_model(arch)
    page = make_page(57, 83, seed=5)
    page[0, :] = 0.0
    page[-1, :] = 1.0
    original = page.copy()
    out = tiled(model, page, tile=16, batch_size=2)
    assert out.shape == page.shape
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(page, original)
    # The output is a real function of the input, not a constant.
    assert out.std() > 1e-4


def test_float64_page_accepted_and_result_float32():
    model = tiny_model("unet")
    page = make_page(40, 50).astype(np.float64)
    original = page.copy()
    out = tiled(model, page, tile=16, batch_size=2)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(page, original)
    assert np.abs(out - tiling.run_whole(model, page.astype(np.float32))).max() <= TOLERANCE


@pytest.mark.parametrize(("dtype", "full_scale"), [(np.uint8, 255), (np.uint16, 65535)])
def test_integer_pages_and_uint8_output_match_the_float_path(dtype, full_scale):
    """A page can stay in its stored integer type and the output be quantised tile by tile (how `clean` keeps
    a huge page small) with the same result as converting everything to floats first."""
    model = tiny_model("unet")
    samples = np.rint(make_page(70, 90) * full_scale).astype(dtype)
    as_float = samples.astype(np.float32) / full_scale
    expected = tiled(model, as_float, tile=16, batch_size=2)
    assert np.abs(tiled(model, samples, tile=16, batch_size=2) - expected).max() <= 1e-6
    quantised = tiled(model, samples, tile=16, batch_size=2, out_dtype=np.uint8)
    assert quantised.dtype == np.uint8
    np.testing.assert_array_equal(quantised, np.clip(np.rint(expected * 255), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize(("height", "width", "tile", "batch"),
                         [(70, 90, 16, 2), (257, 131, 20, 3), (300, 517, 48, 1), (131, 257, 24, 5), (45, 45, 8, 64)])
def test_cleaning_in_place_equals_a_separate_output(arch, height, width, tile, batch):
    """`out=page` (how `clean` keeps a huge page in one buffer) must give the same pixels as a fresh output:
    a core written back too early would corrupt the halo of a window still to come."""
    model = tiny_model(arch)
    samples = np.rint(make_page(height, width, seed=height + width) * 255).astype(np.uint8)
    expected = tiled(model, samples, tile=tile, batch_size=batch, out_dtype=np.uint8)
    in_place = samples.copy()
    result = tiled(model, in_place, tile=tile, batch_size=batch, out=in_place)
    assert result is in_place
    np.testing.assert_array_equal(in_place, expected)
    floats = make_page(height, width, seed=height + width)
    expected = tiled(model, floats, tile=tile, batch_size=batch)
    tiled(model, floats, tile=tile, batch_size=batch, out=floats)
    np.testing.assert_array_equal(floats, expected)


def test_rejects_an_out_array_of_the_wrong_shape_or_type():
    page = make_page(20, 30)
    for out in (np.empty((30, 20), np.float32), np.empty((20, 30), np.float64)):
        with pytest.raises(ValueError, match="out must be"):
            tiled(tiny_model("unet"), page, out=out)


def test_rejects_non_2d_page():
    with pytest.raises(ValueError):
        tiled(tiny_model("unet"), np.zeros((4, 4, 3), dtype=np.float32), tile=4)


def test_on_batch_reports_progress_to_the_total():
    model = tiny_model("dae")
    calls = []
    tiled(model, make_page(50, 70), tile=16, batch_size=3, on_batch=lambda done, total: calls.append((done, total)))
    # 50×70 padded to 52×72 (multiple 4) with 16-pixel cores: 4 rows × 5 columns = 20 tiles, in batches of 3.
    assert calls[-1] == (20, 20)
    assert [done for done, _ in calls] == [3, 6, 9, 12, 15, 18, 20]
    assert all(total == 20 for _, total in calls)


def test_tile_rounded_up_to_size_multiple():
    """A tile that is not a multiple of the model's size multiple (even one below it) is rounded up, not zero."""
    torch.manual_seed(3)
    model = build_model({"arch": "unet", "widths": [8, 16, 32]}).eval()  # size multiple 8
    page = make_page(45, 45)
    whole = tiling.run_whole(model, page)
    for tile in (1, 5, 9):
        calls = []
        out = tiled(model, page, tile=tile, batch_size=64, on_batch=lambda d, t: calls.append(t))
        assert np.abs(out - whole).max() <= TOLERANCE
        rounded = -(-tile // 8) * 8
        expected = (-(-48 // rounded)) ** 2
        assert calls[-1] == expected


def computed_pixels(model, shape, tile):
    """Pixels the network computes for a page of `shape` cut into (rows, columns) cores, halo included."""
    halo, multiple = tiling.halo_for(model), model.size_multiple
    height, width = (-(-side // multiple) * multiple for side in shape)
    win_h, win_w, cores = tiling._windows(height, width, tile, halo)
    return len(cores) * win_h * win_w


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_plan_tile_is_the_whole_page_when_it_fits(arch):
    model = tiny_model(arch)
    padded = tuple(-(-side // model.size_multiple) * model.size_multiple for side in (300, 517))
    assert tiling.plan_tile(model, torch.device("cpu"), (300, 517), 4, 300 * 517) == padded
    assert computed_pixels(model, (300, 517), padded) == padded[0] * padded[1]  # one window, no halo recomputed


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("shape", [(3508, 2480), (2480, 3508), (20000, 30000), (1000, 9000), (9000, 1000)])
@pytest.mark.parametrize("batch", [1, 4])
def test_plan_tile_fits_the_budget_and_computes_the_fewest_pixels(arch, shape, batch, monkeypatch):
    model = tiny_model(arch)
    multiple, halo = model.size_multiple, tiling.halo_for(model)
    budget = tiling.activation_bytes(model, batch * (3 * halo + 64) ** 2)  # windows a few halos wide
    monkeypatch.setattr(tiling, "ACTIVATION_BYTES", budget)
    monkeypatch.setattr(tiling, "CPU_MEMORY_BYTES", 0)
    monkeypatch.setattr(tiling, "LEAST_TILE_CPU", 64)
    tile = tiling.plan_tile(model, torch.device("cpu"), shape, batch, shape[0] * shape[1])
    assert all(side % multiple == 0 and side >= 64 for side in tile)
    win_h, win_w, _ = tiling._windows(*(-(-side // multiple) * multiple for side in shape), tile, halo)
    assert tiling.activation_bytes(model, batch * win_h * win_w) <= budget
    # No grid of square cores within the same budget computes fewer pixels.
    for side in range(64, 4096, multiple):
        window = min(side + 2 * halo, shape[0]) * min(side + 2 * halo, shape[1])
        if tiling.activation_bytes(model, batch * window) <= budget:
            assert computed_pixels(model, shape, tile) <= computed_pixels(model, shape, (side, side))


@pytest.mark.parametrize("name", SHIPPED_MODELS)
@pytest.mark.parametrize("page_bytes", [3508 * 2480, 20000**2])
def test_plan_tile_for_an_a4_page_with_the_shipped_models(name, page_bytes):
    """The case the policy is made for, an 8-bit A4 page at 300 dpi: one window when it fits what the page
    leaves (also the least budget, the one a 20000² page gets), else windows that fit and compute fewer pixels
    than the least squares would."""
    a4, model = (3508, 2480), load_model(name)[0]
    budget = tiling.activation_budget(CPU, page_bytes)
    tile = tiling.plan_tile(model, CPU, a4, 1, page_bytes)
    win_h, win_w, _ = tiling._windows(3520, 2496, tile, tiling.halo_for(model))
    assert tiling.activation_bytes(model, win_h * win_w) <= budget
    if tiling.activation_bytes(model, 3520 * 2496) <= budget:
        assert tile == (3520, 2496)
    else:
        least = (tiling.LEAST_TILE_CPU,) * 2
        assert computed_pixels(model, a4, tile) < computed_pixels(model, a4, least)


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_half_precision_runs_an_a4_page_in_fewer_windows_than_float32(name):
    """bf16 activations take HALF_PRECISION_SHARE of the memory, so the same budget holds larger windows: an 8-bit
    A4 page runs whole, with no halo recomputed, where float32 needs several windows."""
    a4, model = (3508, 2480), load_model(name)[0]
    page_bytes = 2 * a4[0] * a4[1]
    assert tiling.activation_bytes(model, 100, torch.bfloat16) == pytest.approx(
        tiling.HALF_PRECISION_SHARE * tiling.activation_bytes(model, 100))
    half = tiling.plan_tile(model, CPU, a4, 1, page_bytes, torch.bfloat16)
    single = tiling.plan_tile(model, CPU, a4, 1, page_bytes)
    assert half == (3520, 2496) and computed_pixels(model, a4, single) > computed_pixels(model, a4, half)
    assert tiling.activation_bytes(model, 3520 * 2496, torch.bfloat16) <= tiling.activation_budget(CPU, page_bytes)


def gpu_with(monkeypatch, gigabytes: float) -> torch.device:
    """A CUDA device of this much memory, as far as the tiler can tell (no GPU needed)."""
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device: types.SimpleNamespace(total_memory=int(gigabytes * 2**30)))
    return torch.device("cuda")


def test_a_cpu_gives_the_activations_what_the_page_leaves():
    cpu = torch.device("cpu")
    assert tiling.activation_budget(cpu, 20000**2) == tiling.ACTIVATION_BYTES  # the largest page gets the least
    assert tiling.activation_budget(cpu, 10**12) == tiling.ACTIVATION_BYTES
    assert tiling.activation_budget(cpu, 3508 * 2480) == tiling.CPU_MEMORY_BYTES - 3508 * 2480


def test_a_gpu_gives_the_activations_a_share_of_its_memory(monkeypatch):
    """The page lives in host memory, so its size does not matter; a small GPU still gets the least budget."""
    assert tiling.activation_budget(gpu_with(monkeypatch, 80), 20000**2) == 20 * 2**30
    assert tiling.activation_budget(gpu_with(monkeypatch, 0.5), 0) == tiling.ACTIVATION_BYTES


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_a_gpu_with_room_runs_an_a4_page_as_one_window(name, monkeypatch):
    a4, model = (3508, 2480), load_model(name)[0]
    tile = tiling.plan_tile(model, gpu_with(monkeypatch, 16), a4, 4, a4[0] * a4[1])
    assert computed_pixels(model, a4, tile) / (a4[0] * a4[1]) < 1.01  # the edge padding to the size multiple
    tile = tiling.plan_tile(model, gpu_with(monkeypatch, 0), a4, 4, a4[0] * a4[1])  # ACTIVATION_BYTES only
    assert tile == (tiling.LEAST_TILE_CUDA,) * 2


def test_plan_tile_falls_back_to_the_device_default_when_the_budget_is_tiny(monkeypatch):
    model = tiny_model("unet")
    monkeypatch.setattr(tiling, "ACTIVATION_BYTES", 1000)
    monkeypatch.setattr(tiling, "CPU_MEMORY_BYTES", 0)
    cuda = gpu_with(monkeypatch, 0)
    assert tiling.plan_tile(model, torch.device("cpu"), (3000, 3000), 4, 9 * 10**6) == (tiling.LEAST_TILE_CPU,) * 2
    assert tiling.plan_tile(model, cuda, (3000, 3000), 4, 9 * 10**6) == (tiling.LEAST_TILE_CUDA,) * 2


def test_default_batch_is_one_window_on_a_cpu_and_four_on_cuda():
    assert tiling.default_batch(torch.device("cpu")) == 1
    assert tiling.default_batch(torch.device("cuda")) == 4


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("shape", [(200, 90), (90, 200), (157, 157)])
def test_automatic_rectangular_tiles_equal_the_whole_page(arch, shape, monkeypatch):
    model = tiny_model(arch)
    page = make_page(*shape, seed=5)
    whole = tiling.run_whole(model, page)
    monkeypatch.setattr(tiling, "ACTIVATION_BYTES", tiling.activation_bytes(model, 60 * 60))
    monkeypatch.setattr(tiling, "CPU_MEMORY_BYTES", 0)
    monkeypatch.setattr(tiling, "LEAST_TILE_CPU", 8)
    tile = tiling.plan_tile(model, torch.device("cpu"), shape, 1, 0)
    assert tile[0] != tile[1] or max(tile) < max(shape)  # really cut, and not always into squares
    for out_dtype in (np.float32, np.uint8):
        page_in = page if out_dtype == np.float32 else np.rint(page * 255).astype(np.uint8)
        reference = whole if out_dtype == np.float32 else tiling.run_whole(model, page_in)
        result = tiled(model, page_in, out_dtype=out_dtype)
        in_place = page_in.copy()
        assert np.array_equal(tiled(model, in_place, out=in_place), result)
        assert np.abs(result.astype(np.float32) / (255 if out_dtype == np.uint8 else 1) - reference).max() <= (
            TOLERANCE if out_dtype == np.float32 else 1 / 255 + 1e-6)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_halo_is_needed(arch, monkeypatch):
    """Without the halo the stitched result differs from the whole page: the equality test above can fail."""
    model = tiny_model(arch)
    page = make_page(64, 64, seed=11)
    whole = tiling.run_whole(model, page)
    assert np.abs(tiled(model, page, tile=16, batch_size=4) - whole).max() <= TOLERANCE
    monkeypatch.setattr(tiling, "halo_for", lambda model: 0)
    assert np.abs(tiled(model, page, tile=16, batch_size=4) - whole).max() > 1e-3


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_halo_covers_receptive_radius(arch):
    model = tiny_model(arch)
    halo = tiling.halo_for(model)
    assert halo >= model.receptive_radius
    assert halo % model.size_multiple == 0
    assert halo < model.receptive_radius + model.size_multiple


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_bfloat16_autocast_on_cpu(arch):
    model = tiny_model(arch)
    page = make_page(96, 80, seed=2)
    full = tiled(model, page, tile=32, batch_size=2)
    half = tiled(model, page, tile=32, batch_size=2, dtype=torch.bfloat16)
    assert half.dtype == np.float32
    assert half.shape == page.shape
    assert np.abs(half - full).max() <= 0.05
    assert half.min() >= 0.0 and half.max() <= 1.0
