"""The model card and the first-layer filter picture of `cleandoc inspect`."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cleandoc.inspect_model import (
    GAP,
    filter_grid,
    filters_picture,
    first_layer_filters,
    model_card,
)
from cleandoc.models import build_model
from cleandoc.store import load_model, save_model

RICH_INFO = {
    "trained_by": "cleandoc 9.9.9",
    "command": "cleandoc train --dirty d --clean c -o m.safetensors --epochs 3",
    "train_pages": 12, "val_pages": 4,
    "data": {"dirty": "data/dirty", "clean": "data/clean", "pairs": 16, "page_groups": 4,
             "validation": "page-group split, fraction 0.2, seed 7"},
    "options": {"model": {"arch": "unet"}, "epochs": 3, "patch_size": 64, "batch_size": 8, "lr": 0.002,
                "weight_decay": 0.0001, "loss": "l1", "seed": 7},
    "val_rmse": 0.04321, "best_epoch": 3,
    "history": [{"epoch": e, "train_loss": 0.01, "val_rmse": r} for e, r in
                ((1, 0.0812), (2, 0.0555), (3, 0.04321))],
}


def _saved(tmp_path, config: dict, info: dict | None, seed: int = 0):
    torch.manual_seed(seed)
    path = tmp_path / "model.safetensors"
    save_model(build_model(config), path, info)
    return load_model(path)


def test_card_shows_the_training_record(tmp_path):
    card = dict(model_card(*_saved(tmp_path, {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1},
                                   RICH_INFO)))
    assert card["file"] == str(tmp_path / "model.safetensors")
    assert card["format version"] == "1"
    assert card["architecture"].startswith("unet: widths 8-16")
    assert card["trained by"] == "cleandoc 9.9.9"
    assert card["command"] == RICH_INFO["command"]
    for text in ("data/dirty", "data/clean", "16 pairs", "4 page groups", "seed 7"):
        assert text in card["training data"]
    for text in ("3 epochs", "64 px patches", "batch 8", "lr 0.002", "weight decay 0.0001", "l1 loss", "seed 7"):
        assert text in card["options"]
    assert card["noise recipe"] == "none (real pairs only)"
    assert card["validation RMSE"] == "0.0432 (best epoch 3)"
    assert card["last epochs (val RMSE)"] == "epoch 1: 0.0812, 2: 0.0555, 3: 0.0432"


def test_card_shows_a_noise_recipe_wherever_it_is_stored(tmp_path):
    recipe = {"stains": 0.5, "blur": [1, 2]}
    in_options = {**RICH_INFO, "options": {**RICH_INFO["options"], "noise": recipe}}
    config = {"arch": "dae", "widths": [4], "convs": 1}
    assert dict(model_card(*_saved(tmp_path, config, in_options)))["noise recipe"] == "stains 0.5000, blur 1, 2"
    assert dict(model_card(*_saved(tmp_path, config, {"noise": "salt and pepper"})))["noise recipe"] == \
        "salt and pepper"


def test_card_of_a_model_without_info(tiny_model_path):
    model, _ = load_model(tiny_model_path)
    card = dict(model_card(model))
    assert card["architecture"] == "unet: widths 8-16, pixel-unshuffle ×2 stem, 1 conv per block"
    assert card["parameters"] == f"{sum(p.numel() for p in model.parameters()):,}"
    assert card["arithmetic"] == "616 multiply-adds per pixel"  # the tiny U-Net, counted in test_models.py
    assert card["receptive radius"] == f"{model.receptive_radius} px (upper bound)"
    assert card["size multiple"].startswith(f"{model.size_multiple} px")
    assert not {"training data", "options", "noise recipe", "validation RMSE"} & card.keys()


@pytest.mark.parametrize(("kernel", "described"), [
    (1, "a gain and a bias predicted for each input pixel"),
    (3, "a 3×3 filter of the input and a bias predicted for each pixel"),
    (0, "cleaning leans 0.4 logits toward ink"),
    (-1, "cleaning leans 0.6 logits toward ink where the ink is faint, 0.4 where it is dark"),
])
def test_card_describes_per_pixel_filters_and_ink_bias(tmp_path, kernel, described):
    config = {"arch": "unet", "widths": [4, 8], "unshuffle": 2, "convs": 1, "kernel": max(kernel, 0)}
    if kernel <= 0:
        config = {**config, "ink_bias": 0.4} | ({"faint_ink_bias": 0.6} if kernel < 0 else {})
    card = dict(model_card(*_saved(tmp_path, config, {})))
    assert card["architecture"] == f"unet: widths 4-8, pixel-unshuffle ×2 stem, 1 conv per block, {described}"


def test_card_says_the_model_has_a_binary_style(tmp_path):
    config = {"arch": "unet", "widths": [4, 8], "unshuffle": 2, "convs": 1, "binary_style": True}
    card = dict(model_card(*_saved(tmp_path, config, {})))
    assert card["architecture"].endswith("1 conv per block, a binary style of output for --binarize")


@pytest.mark.parametrize("config, side, step, pad", [
    ({"arch": "unet", "widths": [5, 6], "unshuffle": 1, "convs": 1}, 3, 1, 1),
    ({"arch": "unet", "widths": [5, 6], "unshuffle": 2, "convs": 1}, 6, 2, 2),
    ({"arch": "unet", "widths": [5, 6], "unshuffle": 3, "convs": 1}, 9, 3, 3),
    ({"arch": "dae", "widths": [5, 6], "convs": 1}, 3, 2, 1),
])
def test_filters_are_the_first_convs_view_of_the_page(config, side, step, pad):
    """Conv output of unit u at (I, J) == the patch dotted with the input window it covers, + bias.

    The first conv sees x - 0.5. Its window at (I, J) starts at input row I·step - pad: for unet a 3x3 kernel
    over r×r cells with one cell of padding (step = pad = r); for dae a stride-2 3x3 kernel with padding 1."""
    torch.manual_seed(1)
    model = build_model(config).eval()
    conv = model.stem[0] if config["arch"] == "unet" else model.encoder[0][0]
    patches = first_layer_filters(model)
    assert patches.shape == (5, side, side)
    seen = {}
    # a copy: the LeakyReLU after the conv works in place and would scale negative outputs by 0.1
    conv.register_forward_hook(lambda module, inputs, output: seen.update(out=output.clone()))
    x = torch.rand(1, 1, 24, 24, dtype=torch.float32)
    with torch.no_grad():
        model(x)
    page = (x[0, 0] - 0.5).double().numpy()
    for u, (i, j) in ((0, (2, 3)), (4, (3, 1))):
        top, left = i * step - pad, j * step - pad
        window = page[top:top + side, left:left + side]
        expected = (patches[u] * window).sum() + conv.bias[u].item()
        assert seen["out"][0, u, i, j].item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("units", [1, 5, 8, 9])
def test_picture_has_one_cell_per_unit(tmp_path, units):
    torch.manual_seed(2)
    model = build_model({"arch": "dae", "widths": [units], "convs": 1})
    path = tmp_path / "filters.png"
    cell = 12
    assert filters_picture(model, path, cell=cell) == units
    picture = cv2.imread(str(path), cv2.IMREAD_COLOR)
    rows, cols = filter_grid(units)
    assert picture.shape[:2] == (rows * cell + (rows + 1) * GAP, cols * cell + (cols + 1) * GAP)
    gray = (picture[..., 0] == picture[..., 1]) & (picture[..., 1] == picture[..., 2])  # gaps are coloured
    count, labels, stats, _ = cv2.connectedComponentsWithStats(gray.astype(np.uint8), connectivity=4)
    assert count - 1 == units
    assert all(w == cell and h == cell and area == cell * cell for _, _, w, h, area in stats[1:])
    values = picture[..., 0][gray]
    assert values.min() < 127 and values.max() > 128
    assert not list(tmp_path.glob(".*"))  # the atomic write left no temporary behind


def test_picture_refuses_cells_smaller_than_a_patch(tmp_path, tiny_model_path):
    with pytest.raises(ValueError, match="at least the patch size"):
        filters_picture(load_model(tiny_model_path)[0], tmp_path / "f.png", cell=4)


def test_inspect_command_prints_the_card_and_draws_filters(tiny_model_path, tmp_path):
    from typer.testing import CliRunner

    from cleandoc.cli import app

    picture = tmp_path / "filters.png"
    result = CliRunner().invoke(app, ["inspect", str(tiny_model_path), "--filters", str(picture)])
    assert result.exit_code == 0, result.output
    assert "receptive radius" in result.stdout and "parameters" in result.stdout
    assert picture.is_file() and "(8 filters)" in result.stderr
    missing = CliRunner().invoke(app, ["inspect", str(tmp_path / "nope.safetensors")])
    assert missing.exit_code == 2 and "no such model file" in missing.stderr
