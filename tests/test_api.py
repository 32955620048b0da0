"""The front door: `Cleaner.load` then `.clean` / `.clean_file`, the one way in for every caller."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import page_pixels, write_image

import cleandoc
from cleandoc import api, runtime, tiling
from cleandoc.api import Cleaner
from cleandoc.imageio import PageError, read_gray
from cleandoc.metrics import binarize
from cleandoc.models import build_model
from cleandoc.store import ModelFileError, ModelInfo


@pytest.fixture(scope="module")
def cleaner(tiny_model_path) -> Cleaner:
    return Cleaner.load(tiny_model_path, device="cpu", precision="fp32")


def test_cleandoc_exports_the_cleaner():
    assert cleandoc.Cleaner is Cleaner


def test_load_gives_a_typed_record_of_the_model_file(cleaner, tiny_model_path):
    info = cleaner.info
    assert isinstance(info, ModelInfo) and info.source == str(tiny_model_path)
    assert info.config == cleaner.model.config and info.format_version == 1
    assert info.receptive_radius == cleaner.model.receptive_radius and info.parameters > 0
    assert info.provenance == {"note": "untrained tiny test model"} and info.figures == {}
    assert not hasattr(cleaner.model, "info")  # facts live in the record, not on the network
    assert cleaner.device == torch.device("cpu") and cleaner.dtype is None


def test_load_refuses_what_cannot_be_in_one_line(tmp_path, tiny_model_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        Cleaner.load(tmp_path / "absent.safetensors")
    for bad in ({"device": "tpu"}, {"precision": "half"}, {"threads": 0}):
        with pytest.raises(ValueError):
            Cleaner.load(tiny_model_path, **bad)


def test_clean_takes_every_kind_of_array_and_returns_its_kind(cleaner):
    gray = page_pixels(60, 80)
    expected = cleaner.clean(gray)
    assert expected.dtype == np.uint8 and expected.shape == gray.shape
    rgb = np.repeat(gray[..., None], 3, axis=2)
    np.testing.assert_array_equal(cleaner.clean(rgb), expected)
    rgba = np.concatenate([rgb, np.full((60, 80, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(cleaner.clean(rgba), expected)
    sixteen = cleaner.clean(gray.astype(np.uint16) * 257)
    assert sixteen.dtype == np.uint16 and np.abs(sixteen / 257.0 - expected).max() <= 1
    floats = cleaner.clean(gray / np.float32(255))
    assert floats.dtype == np.float32 and np.abs(floats * 255 - expected).max() <= 0.5 + 1e-3
    transparent = rgba.copy()
    transparent[..., 3] = 0  # nothing drawn: white paper
    np.testing.assert_array_equal(cleaner.clean(transparent), cleaner.clean(np.full_like(gray, 255)))


def test_clean_binarizes_in_the_models_binary_style_and_keeps_the_kind():
    torch.manual_seed(0)
    model = build_model({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1, "binary_style": True})
    for film in model.binary_film:
        torch.nn.init.normal_(film, std=1.0)
    styled = Cleaner(model.eval())
    gray = page_pixels(60, 80) // 2 + 10  # paper near mid-grey, where a little change crosses the threshold
    binary = styled.clean(gray, binarize=True)
    assert binary.dtype == np.uint8 and set(np.unique(binary)) <= {0, 255}
    np.testing.assert_array_equal(binary, binarize(styled.run(gray, binary=True)))
    assert (binary != binarize(styled.clean(gray))).any()  # not the grey page thresholded
    assert set(np.unique(styled.clean(gray.astype(np.uint16) * 257, binarize=True))) <= {0, 65535}
    floats = styled.clean(gray / np.float32(255), binarize=True)
    assert floats.dtype == np.float32 and np.array_equal(floats * 255, binary)


def test_clean_reads_colour_as_rgb(cleaner):
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    np.testing.assert_array_equal(cleaner.clean(red), cleaner.clean(np.full((32, 32), 76, np.uint8)))


def test_clean_file_writes_and_names_a_bad_file(cleaner, tmp_path):
    source = write_image(tmp_path / "in.png", page_pixels(40, 50))
    assert cleaner.clean_file(source, tmp_path / "out.png") == []
    np.testing.assert_array_equal(read_gray(tmp_path / "out.png"), cleaner.clean(read_gray(source)))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(PageError, match="bad.png: not an image"):
        cleaner.clean_file(tmp_path / "bad.png", tmp_path / "bad-out.png")


def test_run_counts_the_page_and_its_output_against_the_budget(monkeypatch):
    model = build_model({"arch": "unet", "widths": [8, 16]}).eval()
    seen = []
    monkeypatch.setattr(api, "plan_tile", lambda *args: seen.append(args[-2:]) or (64, 64))
    for dtype, in_place, per_pixel in ((np.uint8, True, 1), (np.uint8, False, 2), (np.float32, False, 5)):
        page = np.zeros((40, 56), dtype)
        Cleaner(model).run(page, out=page if in_place else None)
        assert seen[-1] == (40 * 56 * per_pixel, None)
    Cleaner(model, dtype=torch.bfloat16).run(np.zeros((40, 56), np.uint8))
    assert seen[-1] == (40 * 56 * 2, torch.bfloat16)  # the precision it runs in sizes the windows too


def test_freed_memory_is_returned_after_every_batch_on_a_cpu(monkeypatch):
    """Without it glibc's heap fragments from window to window and a huge page's peak RSS grows past the
    activation budget (bench/speed.py --huge measures the effect; this checks the call is made)."""
    trims = []
    monkeypatch.setattr(runtime, "_malloc_trim", trims.append)
    model = build_model({"arch": "dae", "widths": [8, 16]}).eval()
    Cleaner(model, tile=16, batch_size=3).run(np.zeros((50, 70), np.uint8))
    assert trims == [0] * 7  # 20 tiles in batches of 3


def test_out_of_gpu_memory_halves_the_tile_and_tries_again(monkeypatch):
    model = build_model({"arch": "unet", "widths": [8, 16]}).eval()
    tiles, real_run = [], tiling.run

    def run_with_little_memory(model, page, tile, *args):
        tiles.append(tile)
        if max(tile) > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real_run(model, page, tile, *args)

    monkeypatch.setattr(api, "run", run_with_little_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    page = page_pixels(70, 90)
    cleaned = Cleaner(model, tile=64).run(page)
    assert tiles == [(64, 64), (32, 32), (16, 16)]
    np.testing.assert_array_equal(cleaned, Cleaner(model, tile=16).run(page))
    tiles.clear()
    monkeypatch.setattr(api, "run", lambda *args: tiles.append(args[2]) or (_ for _ in ()).throw(
        torch.cuda.OutOfMemoryError("CUDA out of memory")))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        Cleaner(model, tile=16).run(page)
    assert tiles[-1] == (4, 4)  # down to the size multiple, then it gives up
