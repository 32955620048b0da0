"""The model in models/ loads with no arguments, says where it came from, and really cleans pages."""

from __future__ import annotations

from pathlib import Path

import torch

from cleandoc.data import find_pairs, load_pairs
from cleandoc.metrics import rmse
from cleandoc.store import default_model_path, load_model
from cleandoc.tiling import run

ROOT = Path(__file__).resolve().parents[1]


def test_default_model_is_shipped_small_and_documented():
    path = default_model_path()
    assert path.is_file() and path.stat().st_size <= 20 * 1024 * 1024
    model = load_model()
    assert model.source == str(path)
    info = model.info
    assert info["command"].startswith("cleandoc train")
    assert "noisyoffice" in info["data"]["dirty"]
    assert 0 < info["val_rmse"] < 0.1
    assert (ROOT / "models" / "README.md").is_file()


def test_default_model_cleans_the_samples_much_better_than_doing_nothing():
    torch.set_num_threads(1)
    model = load_model()
    for dirty, clean in load_pairs(find_pairs(ROOT / "samples" / "noisy", ROOT / "samples" / "clean")):
        cleaned = run(model, dirty)
        assert cleaned.shape == dirty.shape
        assert rmse(cleaned, clean) < 0.5 * rmse(dirty, clean)
