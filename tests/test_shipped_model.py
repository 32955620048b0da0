"""The models in models/ load by name (the default with no arguments), say where they came from, and really clean
pages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cleandoc.data import find_pairs, load_pairs
from cleandoc.metrics import rmse
from cleandoc.store import SHIPPED_MODELS, load_model, shipped_model_path
from cleandoc.tiling import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_models_are_small_and_documented(name):
    path = shipped_model_path(name)
    assert path.is_file() and path.stat().st_size <= 20 * 1024 * 1024
    model = load_model(name)
    assert model.source == str(path)
    assert f"`{name}.safetensors`" in (ROOT / "models" / "README.md").read_text()
    info = model.info
    assert info["command"].startswith("cleandoc train")
    assert "noisyoffice" in info["data"]["dirty"]
    assert 0 < info["val_rmse"] < 0.1
    assert (ROOT / "models" / "README.md").is_file()


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_models_clean_the_samples_much_better_than_doing_nothing(name):
    torch.set_num_threads(1)
    model = load_model(name)
    for dirty, clean in load_pairs(find_pairs(ROOT / "samples" / "noisy", ROOT / "samples" / "clean")):
        cleaned = run(model, dirty)
        assert cleaned.shape == dirty.shape
        assert rmse(cleaned, clean) < 0.5 * rmse(dirty, clean)
