"""Shared fixtures for the cleandoc tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cleandoc.models import build_model
from cleandoc.store import save_model

# One intra-op thread: the test models are tiny, and on a small machine that is busy with other work (e.g. a
# training job) PyTorch's default thread pool spins against it and runs a tiny training step ~100x slower.
# One thread also keeps float results repeatable across runs.
torch.set_num_threads(1)

TINY_MODEL_CONFIG = {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1}


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained but deterministic tiny U-Net saved as a cleandoc model file (fast on any CPU)."""
    torch.manual_seed(0)
    model = build_model(TINY_MODEL_CONFIG)
    path = tmp_path_factory.mktemp("tiny-model") / "tiny.safetensors"
    save_model(model, path, {"note": "untrained tiny test model"})
    return path
