"""What a model file says about itself, for a person: the model card and a picture of the first layer.

The card is built from the model's config and the `info` its file carries (written by `cleandoc train`);
a model trained elsewhere may carry little, so every row whose source is missing is simply left out.
"""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import torch
from torch import nn

from .imageio import write_atomically
from .models import count_parameters, multiply_adds_per_pixel
from .store import ModelInfo

RECENT_EPOCHS = 3
GAP = 2
GAP_COLOR = (150, 90, 40)  # BGR, a muted blue: no filter pixel is coloured, so a gap is never mistaken for one


def model_card(model: nn.Module, about: ModelInfo | None = None) -> list[tuple[str, str]]:
    """(label, value) rows describing the model: what it is, how it was trained and how well it did, from what
    its file says (`about`)."""
    info = about.provenance if about else {}
    rows: list[tuple[str, str]] = []
    if about:
        rows += [("file", about.source), ("format version", str(about.format_version))]
    rows += [
        ("architecture", _architecture(model.config)),
        ("parameters", f"{count_parameters(model):,}"),
        ("arithmetic", f"{multiply_adds_per_pixel(model):,.0f} multiply-adds per pixel"),
        ("receptive radius", f"{model.receptive_radius} px (upper bound)"),
        ("size multiple", f"{model.size_multiple} px (pages are padded to a multiple of it)"),
    ]
    for label, key in (("trained by", "trained_by"), ("command", "command")):
        if info.get(key):
            rows.append((label, str(info[key])))
    if isinstance(info.get("data"), dict):
        rows.append(("training data", _data(info["data"], info)))
    options = info.get("options") if isinstance(info.get("options"), dict) else None
    if options:
        rows.append(("options", _options(options)))
    noise = (options or {}).get("noise") or info.get("noise")
    if noise:
        rows.append(("noise recipe", _recipe(noise)))
    elif options:  # only a run whose options we know can be said to have used no synthetic noise
        rows.append(("noise recipe", "none (real pairs only)"))
    if info.get("val_rmse") is not None:
        best = f" (best epoch {info['best_epoch']})" if info.get("best_epoch") else ""
        rows.append(("validation RMSE", f"{_number(info['val_rmse'])}{best}"))
    history = [h for h in info.get("history") or [] if isinstance(h, dict) and "epoch" in h]
    if history:
        epochs = ", ".join(f"{h['epoch']}: {_number(h.get('val_rmse'))}" for h in history[-RECENT_EPOCHS:])
        rows.append(("last epochs (val RMSE)", f"epoch {epochs}"))
    return rows


def _architecture(config: dict) -> str:
    config = dict(config)
    arch = config.pop("arch", "?")
    parts = []
    if "widths" in config:
        parts.append("widths " + "-".join(str(w) for w in config.pop("widths")))
    if "unshuffle" in config:
        parts.append(f"pixel-unshuffle ×{config.pop('unshuffle')} stem")
    if "convs" in config:
        convs = config.pop("convs")
        parts.append(f"{convs} conv{'s' if convs != 1 else ''} per block")
    kernel = config.pop("kernel", 0)
    if kernel == 1:
        parts.append("a gain and a bias predicted for each input pixel")
    elif kernel:
        parts.append(f"a {kernel}×{kernel} filter of the input and a bias predicted for each pixel")
    if config.pop("binary_style", False):
        parts.append("a binary style of output for --binarize")
    ink_bias, faint_ink_bias = config.pop("ink_bias", 0), config.pop("faint_ink_bias", None)
    if faint_ink_bias is not None:
        parts.append(f"cleaning leans {faint_ink_bias:g} logits toward ink where the ink is faint, {ink_bias:g} "
                     "where it is dark")
    elif ink_bias:
        parts.append(f"cleaning leans {ink_bias:g} logits toward ink")
    parts += [f"{key} {value}" for key, value in config.items()]
    return f"{arch}: {', '.join(parts)}" if parts else str(arch)


def _data(data: dict, info: dict) -> str:
    parts = []
    for source in data.get("sources") or []:
        where = f"{source.get('dirty')} → {source.get('clean')}" if source.get("dirty") else \
            f"{source.get('clean')} (clean pages, corrupted on the fly)"
        if source.get("use") == "validation":
            parts.append(f"{where}: {source.get('pages', '?')} pages, all for validation")
        else:
            parts.append(f"{where}, weight {source.get('weight', 1):g}: {source.get('train_pages', '?')} pages for "
                         f"training, {source.get('val_pages', '?')} for validation, "
                         f"{source.get('sealed_pages', 0)} sealed")
    if data.get("dirty") or data.get("clean"):
        parts.append(f"{data.get('dirty', '?')} → {data.get('clean', '?')}")
    for key, label in (("pairs", "pairs"), ("page_groups", "page groups")):
        if data.get(key) is not None:
            parts.append(f"{data[key]} {label}")
    if info.get("train_pages") is not None and info.get("val_pages") is not None:
        parts.append(f"{info['train_pages']} pages for training, {info['val_pages']} for validation")
    if data.get("validation"):
        parts.append(f"validation: {data['validation']}")
    return "; ".join(parts)


_OPTION_TEXT = {"epochs": "{} epochs", "patch_size": "{} px patches", "patches_per_epoch": "{} patches per epoch",
                "batch_size": "batch {}", "lr": "lr {}", "weight_decay": "weight decay {}", "loss": "{} loss",
                "patience": "patience {}", "seed": "seed {}"}


def _options(options: dict) -> str:
    """The training options in words; options this module does not know yet are shown as `name value`.
    The model config and the noise recipe have rows of their own."""
    known = [text.format(options[key]) for key, text in _OPTION_TEXT.items() if options.get(key) is not None]
    other = [f"{key} {_recipe(value)}" for key, value in options.items()
             if key not in _OPTION_TEXT and key not in ("model", "noise") and value is not None]
    return ", ".join(known + other)


def _recipe(noise) -> str:
    if isinstance(noise, dict):
        return ", ".join(f"{key} {_recipe(value)}" for key, value in noise.items())
    if isinstance(noise, list):
        return ", ".join(_recipe(item) for item in noise)
    return _number(noise)


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 else f"{value:.3g}"
    return "n/a" if value is None else str(value)


def first_layer_filters(model: nn.Module) -> np.ndarray:
    """The first conv's weights as patches of the input page, shape (units, k·r, k·r).

    After a pixel unshuffle by r, channel dy·r+dx at cell (i, j) holds input pixel (i·r+dy, j·r+dx), so
    weight[u, dy·r+dx, i, j] multiplies patch pixel [i·r+dy, j·r+dx]; with r = 1 this is weight[u, 0]."""
    conv, r = model.first_conv
    weight = conv.weight.detach().to("cpu", torch.float64).numpy()
    units, _, k, _ = weight.shape
    # (u, dy, dx, i, j) -> (u, i, dy, j, dx) -> (u, i·r+dy, j·r+dx)
    return weight.reshape(units, r, r, k, k).transpose(0, 3, 1, 4, 2).reshape(units, k * r, k * r)


def filter_grid(units: int) -> tuple[int, int]:
    """(rows, columns) of the near-square grid `filters_picture` lays `units` cells out on."""
    cols = math.ceil(math.sqrt(units))
    return math.ceil(units / cols), cols


def filters_picture(model: nn.Module, path: str | os.PathLike, cell: int = 48) -> int:
    """Write a PNG with, for each first-layer unit, the unit-norm input patch that excites it most (w/‖w‖):
    0 is mid-gray, +/− the largest |value| in the picture white/black. Returns the number of cells.

    One scale for the whole picture, not one per cell: every patch has norm 1, so a shared scale keeps what
    tells units apart; a peaked detector shows strong pixels and a diffuse, averaging unit shows faint ones,
    where scaling each cell to full contrast would make every unit look equally sharp."""
    patches = first_layer_filters(model)
    units, side, _ = patches.shape
    if cell < side:
        raise ValueError(f"cell must be at least the patch size ({side} px), got {cell}")
    norms = np.linalg.norm(patches.reshape(units, -1), axis=1)
    unit_patches = patches / np.maximum(norms, np.finfo(np.float64).tiny)[:, None, None]
    scale = np.abs(unit_patches).max() or 1.0
    gray = np.clip(np.rint(127.5 + 127.5 * unit_patches / scale), 0, 255).astype(np.uint8)
    rows, cols = filter_grid(units)
    picture = np.empty((rows * cell + (rows + 1) * GAP, cols * cell + (cols + 1) * GAP, 3), np.uint8)
    picture[:] = GAP_COLOR
    for index, patch in enumerate(gray):
        y, x = GAP + (index // cols) * (cell + GAP), GAP + (index % cols) * (cell + GAP)
        picture[y:y + cell, x:x + cell] = cv2.resize(patch, (cell, cell), interpolation=cv2.INTER_NEAREST)[..., None]
    ok, encoded = cv2.imencode(".png", picture)
    if not ok:
        raise ValueError("could not encode the filter picture as PNG")
    write_atomically(path, encoded.tobytes())
    return units
