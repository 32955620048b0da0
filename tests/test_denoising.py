"""The denoising-autoencoder toolbox wired into training: clean pages alone, synthetic pairs mixed with real
ones, real-noise transfer, and the recipe kept in the model file."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from cleandoc.cli import app
from cleandoc.data import PageSet, PatchSampler, Source
from cleandoc.imageio import read_page
from cleandoc.store import load_model
from cleandoc.synth import synth_pages
from cleandoc.train import TrainingError, TrainOptions, train_from_sources

TINY = {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1}


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synth_pages(out, 4, dpi=50, seed=3)
    return out


def test_clean_only_training_lowers_validation_loss_and_keeps_the_recipe(synth_set, tmp_path):
    options = TrainOptions(model=TINY, epochs=4, patch_size=48, batch_size=8, patches_per_epoch=64, lr=5e-3,
                           noise=["gaussian:0.1", "mask:0.2"], patience=0, seed=0, val_fraction=0.25)
    out = tmp_path / "m.safetensors"
    state = train_from_sources([Source(clean=synth_set / "clean")], out, options)
    history = [h["val_rmse"] for h in state["history"]]
    assert history[-1] < history[0]
    info = load_model(out)[1].provenance
    assert info["options"]["noise"] == ["gaussian:0.1", "mask:0.2"]
    assert info["data"]["sources"][0]["dirty"] is None and info["data"]["sources"][0]["val_pages"] == 1


def test_real_pairs_mix_with_synthetic_and_transferred_noise(synth_set, tmp_path):
    options = TrainOptions(model=TINY, epochs=1, patch_size=32, batch_size=4, patches_per_epoch=8,
                           noise=["transfer:0.8", "gaussian:0.05"], synthetic_fraction=0.5, val_fraction=0.25)
    out = tmp_path / "m.safetensors"
    train_from_sources([Source(clean=synth_set / "clean", dirty=synth_set / "dirty")], out, options)
    assert load_model(out)[1].provenance["options"]["noise"] == ["transfer:0.8", "gaussian:0.05"]


def test_transfer_without_real_pairs_is_refused(synth_set, tmp_path):
    options = TrainOptions(model=TINY, epochs=1, noise=["transfer"])
    with pytest.raises(TrainingError, match="real pairs"):
        train_from_sources([Source(clean=synth_set / "clean")], tmp_path / "m.safetensors", options)


def test_sampler_corrupts_only_its_synthetic_fraction():
    page = np.ones((64, 64), np.float32)
    sampler = PatchSampler([(page * 0.5, page)], 16, synthesize=lambda clean, rng: clean * 0.0,
                           synthetic_fraction=0.25)
    dirty, _, _ = sampler.batch(400, np.random.default_rng(0))
    synthetic = (dirty.reshape(400, -1).max(axis=1) == 0).mean()
    assert 0.18 < synthetic < 0.32
    # a source of clean pages alone is corrupted every time, beside a real one that is not
    sampler = PatchSampler([PageSet([(page, page)], synthetic_only=True), PageSet([(page * 0.5, page)])], 16,
                           synthesize=lambda clean, rng: clean * 0.0, synthetic_fraction=0.0)
    dirty, _, _ = sampler.batch(400, np.random.default_rng(0))
    assert set(np.unique(dirty.reshape(400, -1).max(axis=1))) == {0.0, 0.5}
    with pytest.raises(ValueError, match="noise recipe"):
        PatchSampler([PageSet([(page, page)], synthetic_only=True)], 16)


def test_train_command_with_noise_only_and_a_bad_recipe(synth_set, tmp_path):
    base = ["train", "--pages", str(synth_set / "clean"), "--widths", "8,16", "--convs", "1", "--epochs", "1",
            "--patch-size", "32", "--batch-size", "4", "--patches-per-epoch", "8", "--device", "cpu"]
    ok = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "a.safetensors"), "--noise", "blur:1",
                                  "--noise", "stains"])
    assert ok.exit_code == 0, ok.output
    bad = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "b.safetensors"), "--noise", "glitter:2"])
    assert bad.exit_code == 2 and "unknown corruption 'glitter'" in bad.stderr and "Traceback" not in bad.output


def test_synth_command_writes_aligned_pairs(tmp_path):
    result = CliRunner().invoke(app, ["synth", "-o", str(tmp_path / "s"), "--pages", "2", "--dpi", "50"])
    assert result.exit_code == 0, result.output
    dirty = sorted(p.name for p in (tmp_path / "s" / "dirty").iterdir())
    assert dirty == sorted(p.name for p in (tmp_path / "s" / "clean").iterdir()) and len(dirty) == 2
    figures = CliRunner().invoke(app, ["synth", "-o", str(tmp_path / "f"), "--pages", "1", "--dpi", "50", "--figures"])
    assert figures.exit_code == 0, figures.output
    assert read_page(tmp_path / "f" / "clean" / "page-0001.png").shape == (413, 291)  # A5, not A4
