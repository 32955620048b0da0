"""Training data pairing, grouping and splitting, the training loop, checkpoints and --resume, and the
`cleandoc train` command, on a tiny synthetic pair set and a tiny U-Net (seconds on a CPU)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import cli

from cleandoc.api import Cleaner
from cleandoc.data import (
    PageSet,
    PairingError,
    PatchSampler,
    Source,
    find_pairs,
    load_pairs,
    page_groups,
    parse_source,
    split_by_group,
)
from cleandoc.evaluate import pooled_rmse
from cleandoc.models import build_model
from cleandoc.noise import make_corruptor, parse_recipe
from cleandoc.store import load_checkpoint, load_model
from cleandoc.train import (
    TrainingError,
    TrainOptions,
    _loss,
    checkpoint_path,
    diverged,
    train,
    train_from_sources,
)

TINY = {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1}
SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data" / "noisyoffice-kaggle"
PAGES, VARIANTS, SIZE = 6, 2, 96


def tiny_options(**changes) -> TrainOptions:
    options = TrainOptions(model=dict(TINY), epochs=3, patch_size=32, patches_per_epoch=64, batch_size=8, lr=3e-3,
                           seed=0)
    return dataclasses.replace(options, **changes)


def clean_pages(count: int = PAGES, size: int = SIZE, seed: int = 0) -> list[np.ndarray]:
    """Distinct white pages with a few dark rectangles and text-like lines (uint8)."""
    rng = np.random.default_rng(seed)
    pages = []
    for _ in range(count):
        page = np.full((size, size), 255, np.uint8)
        for _ in range(4):
            y, x = rng.integers(0, size - 20, 2)
            h, w = rng.integers(4, 20, 2)
            page[y:y + h, x:x + w] = rng.integers(0, 80)
        for _ in range(5):
            y, x0, x1 = rng.integers(4, size - 4), rng.integers(0, 40), rng.integers(50, size)
            page[y:y + 2, x0:x1] = 25
        pages.append(page)
    assert len({p.tobytes() for p in pages}) == count
    return pages


def noise_patterns(size: int = SIZE, seed: int = 1) -> list[tuple[np.ndarray, float]]:
    """Fixed (noise pattern, offset) per variant: smooth blotches plus grain, darkening the paper."""
    rng = np.random.default_rng(seed)
    patterns = []
    for offset in (-50.0, -80.0):
        blotches = cv2.GaussianBlur(rng.normal(0, 60, (size, size)), (0, 0), 6)
        patterns.append((blotches + rng.normal(0, 10, (size, size)), offset))
    return patterns


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), pixels)
    return path


def from_folders(dirty: Path, clean: Path, out: Path, options: TrainOptions, **kwargs) -> dict:
    """Train on one source of pairs."""
    return train_from_sources([Source(clean=clean, dirty=dirty)], out, options, **kwargs)


def make_pair_set(root: Path, pages: int = PAGES, seed: int = 0) -> tuple[Path, Path]:
    """dirty/ and clean/ holding pages x VARIANTS pairs; the same page's clean files are identical."""
    dirty_dir, clean_dir = root / "dirty", root / "clean"
    for i, clean in enumerate(clean_pages(pages, seed=seed)):
        for v, (noise, offset) in enumerate(noise_patterns()):
            dirty = np.clip(clean.astype(np.float64) + noise + offset, 0, 255).astype(np.uint8)
            write_png(dirty_dir / f"p{i}_{v}.png", dirty)
            write_png(clean_dir / f"p{i}_{v}.png", clean)
    return dirty_dir, clean_dir


@pytest.fixture(scope="module")
def pair_set(tmp_path_factory) -> tuple[Path, Path]:
    return make_pair_set(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def trained(pair_set, tmp_path_factory) -> dict:
    """One uninterrupted 3-epoch run, shared by the tests that inspect its results."""
    out = tmp_path_factory.mktemp("trained") / "model.safetensors"
    events: list[dict] = []
    state = from_folders(*pair_set, out, tiny_options(), device="cpu", on_progress=events.append)
    return {"out": out, "state": state, "events": events}


def val_pages(pair_set, fraction: float = 0.2, seed: int = 0):
    pages = load_pairs(find_pairs(*pair_set))
    return [pages[i] for i in split_by_group(page_groups([c for _, c in pages]), fraction, seed).val]


def train_cli(dirty: Path, clean: Path, out: Path, *extra):
    return cli("train", "--pairs", f"{dirty}:{clean}", "-o", out, "--widths", "8,16", "--unshuffle", "2",
               "--convs", "1", "--kernel", "0", "--patch-size", "32", "--batch-size", "8", "--patches-per-epoch",
               "64", "--lr", "3e-3", "--device", "cpu", *extra)


def squeeze(text: str) -> str:
    """Text without whitespace, to compare output that Rich may have hard-wrapped."""
    return "".join(text.split())


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=atol, rtol=0), (key, (a[key] - b[key]).abs().max().item())


# --- pairing, grouping, splitting ---------------------------------------------------------------------------


def test_find_pairs_pairs_by_stem_across_extensions(tmp_path):
    write_png(tmp_path / "dirty" / "a" / "1.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "clean" / "a" / "1.bmp", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "dirty" / "2.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "clean" / "2.tif", np.zeros((8, 8), np.uint8))
    (tmp_path / "clean" / "README.txt").write_text("not an image, ignored")
    pairs = find_pairs(tmp_path / "dirty", tmp_path / "clean")
    assert [(p.name, p.dirty.name, p.clean.name) for p in pairs] == [("2", "2.png", "2.tif"),
                                                                    ("a/1", "1.png", "1.bmp")]


def test_page_groups_group_identical_clean_pages(pair_set):
    pairs = find_pairs(*pair_set)
    assert len(pairs) == PAGES * VARIANTS
    groups = page_groups([clean for _, clean in load_pairs(pairs)])
    assert len(set(groups)) == PAGES
    by_page: dict[str, set[int]] = {}
    for pair, group in zip(pairs, groups):
        by_page.setdefault(pair.name.split("_")[0], set()).add(group)
    assert all(len(ids) == 1 for ids in by_page.values())  # both variants of a page share a group
    assert len({next(iter(ids)) for ids in by_page.values()}) == PAGES  # different pages do not


def test_page_groups_tell_same_bytes_of_different_shapes_apart():
    a = np.ones((4, 6), np.float32)
    assert page_groups([a, a.copy(), a.reshape(6, 4), np.zeros((4, 6), np.float32)]) == [0, 0, 1, 2]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.2, 0.34, 0.5, 0.9])
@pytest.mark.parametrize("sealed", [0.0, 0.15])
def test_split_by_group_never_straddles_a_group(fraction, sealed):
    rng = np.random.default_rng(42)
    for seed in range(40):
        groups = [int(g) for g in rng.integers(0, int(rng.integers(2, 12)), int(rng.integers(2, 40)))]
        split = split_by_group(groups, fraction, seed, sealed)
        assert sorted(split.train + split.val + split.sealed) == list(range(len(groups)))
        parts = [{groups[i] for i in part} for part in (split.train, split.val, split.sealed)]
        assert not parts[0] & parts[1] and not parts[0] & parts[2] and not parts[1] & parts[2]
        assert split.train  # something always trains
        if fraction == 0 or len(set(groups)) == 1:
            assert split.val == []
        else:
            assert split.val  # a positive fraction holds out at least one group
        assert split_by_group(groups, fraction, seed, sealed) == split  # repeatable
        # sealing groups away leaves the validation groups as they were
        assert split_by_group(groups, fraction, seed).val == split.val


@pytest.mark.parametrize("fraction", [
    0.2,
    0.9,
])
def test_split_by_group_with_one_group_keeps_it_for_training(fraction):
    split = split_by_group([0, 0, 0], fraction, 0, sealed_fraction=fraction)
    assert split.train == [0, 1, 2] and split.val == split.sealed == []


def test_parse_source_reads_folders_weight_and_fractions():
    assert parse_source("d:c") == Source(clean=Path("c"), dirty=Path("d"))
    assert parse_source("d:c:2.5") == Source(clean=Path("c"), dirty=Path("d"), weight=2.5)
    assert parse_source("d:c:weight=0.5,val=0,sealed=0.15") == Source(Path("c"), Path("d"), 0.5, 0.0, 0.15)
    assert parse_source("c:val=0.1", pairs=False) == Source(clean=Path("c"), val=0.1)
    for bad in ("d", "d:c:x", "d:c:weight=0", "d:c:colour=1", "d:c:val=1", ":c", "d:c:1:2", "d:c:val=-1"):
        with pytest.raises(ValueError) as caught:
            parse_source(bad)
        assert bad in str(caught.value) and "\n" not in str(caught.value)


def test_find_pairs_lists_every_problem(tmp_path):
    dirty, clean = tmp_path / "dirty", tmp_path / "clean"
    page = np.full((8, 8), 200, np.uint8)
    for name in ("ok.png", "lonely_dirty.png", "amb.png", "amb.jpg"):
        write_png(dirty / name, page)
    for name in ("ok.png", "amb.png", "lonely_clean.png"):
        write_png(clean / name, page)
    with pytest.raises(PairingError) as caught:
        find_pairs(dirty, clean)
    problems = caught.value.problems
    assert len(problems) == 3, problems
    message = str(caught.value)
    assert str(dirty / "lonely_dirty.png") in message and "no clean partner" in message
    assert str(clean / "lonely_clean.png") in message and "no dirty partner" in message
    assert str(dirty / "amb.png") in message and str(dirty / "amb.jpg") in message and "ambiguous" in message


def test_find_pairs_refuses_missing_or_empty_folders(tmp_path):
    with pytest.raises(PairingError, match="no such folder"):
        find_pairs(tmp_path / "nope", tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "c").mkdir()
    with pytest.raises(PairingError, match="no images found"):
        find_pairs(tmp_path / "d", tmp_path / "c")


def test_load_pairs_lists_every_size_mismatch_and_unreadable_file(tmp_path):
    dirty, clean = tmp_path / "dirty", tmp_path / "clean"
    write_png(dirty / "a.png", np.zeros((96, 96), np.uint8))
    write_png(clean / "a.png", np.zeros((80, 96), np.uint8))
    write_png(dirty / "b.png", np.zeros((20, 30), np.uint8))
    write_png(clean / "b.png", np.zeros((30, 20), np.uint8))
    write_png(dirty / "c.png", np.zeros((10, 10), np.uint8))
    (clean / "c.png").write_bytes(b"garbage")
    write_png(dirty / "d.png", np.zeros((10, 10), np.uint8))
    write_png(clean / "d.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(PairingError) as caught:
        load_pairs(find_pairs(dirty, clean))
    problems = caught.value.problems
    assert len(problems) == 3, problems
    message = str(caught.value)
    assert str(dirty / "a.png") in message and "96x96" in message and "96x80" in message
    assert str(dirty / "b.png") in message and "30x20" in message and "20x30" in message
    assert str(clean / "c.png") in message
    assert "d.png" not in message


def test_patch_sampler_keeps_patches_aligned_and_sized():
    rng = np.random.default_rng(0)
    dirty = rng.random((40, 50)).astype(np.float32)
    sampler = PatchSampler([(dirty, dirty.copy())], 16)
    inputs, targets, binary = sampler.batch(5, np.random.default_rng(1))
    assert inputs.shape == targets.shape == (5, 1, 16, 16) and inputs.dtype == np.float32
    np.testing.assert_array_equal(inputs, targets)  # identical pages give identical patches
    assert binary.shape == (5,) and not binary.any()  # a grey target
    again, _, _ = sampler.batch(5, np.random.default_rng(1))
    np.testing.assert_array_equal(inputs, again)


def test_patch_sampler_flags_the_patches_of_pages_whose_target_is_an_ink_mask():
    grey = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    mask = (grey >= 0.5).astype(np.float32)
    sampler = PatchSampler([PageSet([(grey, grey)]), PageSet([(grey, mask)])], 16, max_scale=2)
    _, targets, binary = sampler.batch(200, np.random.default_rng(0))
    np.testing.assert_array_equal(binary == 1, np.isin(targets, (0, 1)).all(axis=(1, 2, 3)))
    assert 60 < binary.sum() < 140


# --- the training loop ----------------------------------------------------------------------------------------


def test_training_lowers_validation_rmse_and_writes_a_usable_model(pair_set, trained, tmp_path):
    state, out = trained["state"], trained["out"]
    val = val_pages(pair_set)
    assert len(val) == VARIANTS  # 0.2 of 6 page groups: one group, two pages
    torch.manual_seed(0)
    untrained_rmse = pooled_rmse(Cleaner(build_model(TINY)), val)

    history = state["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and state["epoch"] == 3
    assert state["best_rmse"] == min(h["val_rmse"] for h in history)
    assert state["best_rmse"] < untrained_rmse
    assert history[-1]["val_rmse"] < untrained_rmse

    data_event = next(e for e in trained["events"] if e["event"] == "data")
    assert data_event["train_pages"] == 10 and data_event["val_pages"] == 2
    assert sum(e["event"] == "step" for e in trained["events"]) == 3 * (64 // 8)

    model, about = load_model(out)
    assert model.config == TINY
    assert about.provenance["best_epoch"] == state["best_epoch"]
    assert pooled_rmse(Cleaner(model), val) == pytest.approx(state["best_rmse"], abs=1e-6)
    assert checkpoint_path(out).exists()
    assert checkpoint_path(out).parent == out.parent
    _, _, ckpt_state = load_checkpoint(checkpoint_path(out))
    assert ckpt_state["epoch"] == 3

    result = cli("clean", pair_set[0] / "p0_0.png", "-o", tmp_path / "cleaned", "--model", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    cleaned = cv2.imread(str(tmp_path / "cleaned" / "p0_0.png"), cv2.IMREAD_UNCHANGED)
    assert cleaned.shape == (SIZE, SIZE) and cleaned.dtype == np.uint8


def test_checkpoint_path_sits_beside_the_model(tmp_path):
    assert checkpoint_path(tmp_path / "m.safetensors") == tmp_path / "m.ckpt.safetensors"
    assert checkpoint_path(tmp_path / "model") == tmp_path / "model.ckpt.safetensors"


def test_explicit_validation_folders(pair_set, tmp_path):
    val_dirty, val_clean = make_pair_set(tmp_path / "val", pages=1, seed=7)
    events: list[dict] = []
    out = tmp_path / "m.safetensors"
    state = from_folders(*pair_set, out, tiny_options(epochs=1, val_fraction=0.0),
                         val_sources=[Source(clean=val_clean, dirty=val_dirty)], device="cpu",
                         on_progress=events.append)
    data_event = next(e for e in events if e["event"] == "data")
    assert data_event["train_pages"] == PAGES * VARIANTS  # every pair trains
    assert data_event["val_pages"] == VARIANTS
    assert data_event["sources"][-1]["use"] == "validation" and data_event["sources"][-1]["dirty"] == str(val_dirty)
    expected = pooled_rmse(Cleaner(load_model(out)[0]), load_pairs(find_pairs(val_dirty, val_clean)))
    assert state["history"][0]["val_rmse"] == pytest.approx(expected, abs=1e-6)


def test_several_sources_are_drawn_by_weight_and_split_each_by_group(tmp_path):
    first, second = make_pair_set(tmp_path / "a", seed=0), make_pair_set(tmp_path / "b", pages=5, seed=3)
    events: list[dict] = []
    out = tmp_path / "m.safetensors"
    sources = [Source(clean=first[1], dirty=first[0], weight=3.0, sealed=0.2),
               Source(clean=second[1], dirty=second[0], val=0.0)]
    from_folders_state = train_from_sources(sources, out, tiny_options(epochs=1), device="cpu",
                                            on_progress=events.append)
    assert from_folders_state["epoch"] == 1
    recorded = next(e for e in events if e["event"] == "data")["sources"]
    assert [(s["train_pages"], s["val_pages"], s["sealed_pages"]) for s in recorded] == [(8, 2, 2), (10, 0, 0)]
    data = load_model(out)[1].provenance["data"]
    assert data["sources"] == recorded and data["seed"] == 0
    # each source's validation RMSE is recorded beside the pooled one (the second source holds none out)
    epoch = next(e for e in events if e["event"] == "epoch")
    assert list(epoch.get("val_by_source", {})) == []  # one validation source: the pooled figure says it all
    # the sampler draws sources in proportion to their weights
    small = np.zeros((40, 40), np.uint8)
    sampler = PatchSampler([PageSet([(small, small)], weight=3.0), PageSet([(small + 255, small + 255)])], 16)
    inputs, _, _ = sampler.batch(400, np.random.default_rng(0))
    assert 0.2 < inputs.mean() < 0.3  # a quarter of the patches from the white source


def test_each_validation_source_is_scored_and_pooled_by_its_pixels(tmp_path):
    first, second = make_pair_set(tmp_path / "a", seed=0), make_pair_set(tmp_path / "b", pages=2, seed=5)
    out = tmp_path / "m.safetensors"
    state = train_from_sources([Source(clean=first[1], dirty=first[0])], out, tiny_options(epochs=1),
                               val_sources=[Source(clean=second[1], dirty=second[0])], device="cpu")
    entry = state["history"][0]
    model = Cleaner(load_model(out)[0])
    pages = load_pairs(find_pairs(*first))
    held_out = [pages[i] for i in split_by_group(page_groups([c for _, c in pages]), 0.2, 0).val]
    expected = {str(first[0]): pooled_rmse(model, held_out),
                str(second[0]): pooled_rmse(model, load_pairs(find_pairs(*second)))}
    assert entry["val_by_source"] == pytest.approx(expected, abs=1e-6)
    assert entry["val_rmse"] == pytest.approx(pooled_rmse(model, held_out + load_pairs(find_pairs(*second))), abs=1e-6)
    assert min(expected.values()) < entry["val_rmse"] < max(expected.values())
    result = train_cli(*first, tmp_path / "cli.safetensors", "--val-pairs", f"{second[0]}:{second[1]}", "--epochs",
                       "1", "--val-fraction", "0.2")
    assert result.exit_code == 0 and f"{second[0]}: " in result.stderr, result.output


def test_resuming_a_finished_run_does_not_restart_it(pair_set, tmp_path):
    out = tmp_path / "m.safetensors"
    first = from_folders(*pair_set, out, tiny_options(epochs=2), device="cpu")
    assert [h["epoch"] for h in first["history"]] == [1, 2]
    before = load_checkpoint(checkpoint_path(out))[0].state_dict()

    events: list[dict] = []
    resumed = from_folders(*pair_set, out, tiny_options(epochs=2), resume=True, device="cpu",
                                 on_progress=events.append)

    assert resumed["epoch"] == 2
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"] == first["history"]
    assert not any(e["event"] in ("step", "epoch") for e in events)
    assert_same_weights(load_checkpoint(checkpoint_path(out))[0].state_dict(), before, atol=0)


def test_resume_after_an_interrupt_matches_an_uninterrupted_run(pair_set, trained, tmp_path):
    out = tmp_path / "m.safetensors"

    def interrupt_after_first_epoch(event: dict) -> None:
        if event["event"] == "epoch" and event["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        from_folders(*pair_set, out, tiny_options(), device="cpu", on_progress=interrupt_after_first_epoch)
    assert load_checkpoint(checkpoint_path(out))[2]["epoch"] == 1

    epochs_run: list[int] = []
    state = from_folders(*pair_set, out, tiny_options(), resume=True, device="cpu",
                               on_progress=lambda e: e["event"] == "epoch" and epochs_run.append(e["epoch"]))

    assert epochs_run == [2, 3]  # continued, not restarted
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3]
    reference = trained["state"]
    assert state["step"] == reference["step"]
    for got, want in zip(state["history"], reference["history"]):
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-6)
        assert got["val_rmse"] == pytest.approx(want["val_rmse"], abs=1e-6)
    assert_same_weights(load_checkpoint(checkpoint_path(out))[0].state_dict(),
                        load_checkpoint(checkpoint_path(trained["out"]))[0].state_dict())
    assert_same_weights(weights(out), weights(trained["out"]))


def test_patch_workers_draw_the_same_patches_as_the_training_process(pair_set, tmp_path):
    out = tmp_path / "m.safetensors"
    options = tiny_options(noise=["random"], synthetic_fraction=0.5)
    cv2.GaussianBlur(np.zeros((1024, 1024), np.float32), (31, 31), 5)  # OpenCV's thread pool is running, as in a run
    alone = from_folders(*pair_set, tmp_path / "alone.safetensors", options, device="cpu", workers=0)
    helped = from_folders(*pair_set, out, options, device="cpu", workers=2)

    for got, want in zip(helped["history"], alone["history"], strict=True):
        assert got["train_loss"] == pytest.approx(want["train_loss"], abs=1e-6)
    assert_same_weights(weights(out), weights(tmp_path / "alone.safetensors"))


def test_a_noise_recipe_travels_to_another_process_intact():
    corruptor = make_corruptor(parse_recipe(["random", "faint:0.5"]))
    page = clean_pages(1)[0].astype(np.float32) / 255
    copy = pickle.loads(pickle.dumps(corruptor))  # what a spawned patch worker receives
    assert np.array_equal(copy(page, np.random.default_rng(3)), corruptor(page, np.random.default_rng(3)))


def test_resume_without_a_checkpoint_is_a_training_error(pair_set, tmp_path):
    with pytest.raises(TrainingError, match="no checkpoint"):
        from_folders(*pair_set, tmp_path / "m.safetensors", tiny_options(), resume=True, device="cpu")


def test_unknown_loss_is_a_training_error(tmp_path):
    page = np.ones((32, 32), np.float32)
    with pytest.raises(TrainingError, match="unknown loss"):
        train([(page, page)], [], tmp_path / "m.safetensors", tiny_options(loss="huber"), device="cpu")
    assert not (tmp_path / "m.safetensors").exists()


def test_unknown_architecture_is_a_training_error(tmp_path):
    page = np.ones((32, 32), np.float32)
    with pytest.raises(TrainingError, match="unknown architecture"):
        train([(page, page)], [], tmp_path / "m.safetensors", tiny_options(model={"arch": "transformer"}),
              device="cpu")


def test_diverged_flags_a_tenfold_jump_over_the_best_earlier_loss():
    history = [{"train_loss": loss} for loss in (0.01, 0.002, 0.003)]
    assert not diverged(history[:1]) and not diverged(history)
    assert diverged(history + [{"train_loss": 0.0201}])
    assert not diverged(history + [{"train_loss": 0.019}])


def scale_the_loss(monkeypatch, factor_at_call) -> None:
    """Make the training loop see its real loss times factor_at_call(n) at its n-th loss computation (from 1)."""
    import cleandoc.train as training

    real_loss, calls = training._loss, []

    def scaled(*args):
        calls.append(1)
        return real_loss(*args) * factor_at_call(len(calls))

    monkeypatch.setattr(training, "_loss", scaled)


STEPS_PER_EPOCH = tiny_options().patches_per_epoch // tiny_options().batch_size


def test_a_run_that_blows_up_stops_with_the_best_model_kept(pair_set, tmp_path, monkeypatch):
    # epoch 2 onwards: the loss a collapsed run reports
    scale_the_loss(monkeypatch, lambda call: 1000 if call > STEPS_PER_EPOCH else 1)
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainingError, match="diverged at epoch 2 .*the best model.*lower --lr"):
        from_folders(*pair_set, out, tiny_options(), device="cpu")  # 3 epochs asked for
    assert load_model(out)[1].provenance["epoch"] <= 2
    assert load_checkpoint(checkpoint_path(out))[2]["epoch"] == 2


def test_a_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(pair_set, tmp_path, monkeypatch):
    scale_the_loss(monkeypatch, lambda call: float("nan") if call == STEPS_PER_EPOCH + 3 else 1)
    out = tmp_path / "m.safetensors"
    with pytest.raises(TrainingError, match="loss became nan at epoch 2; lower --lr. The last good checkpoint"):
        from_folders(*pair_set, out, tiny_options(), device="cpu")
    model, _, state = load_checkpoint(checkpoint_path(out))
    assert state["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_train_command_records_mixed_precision_off(pair_set, tmp_path):
    out = tmp_path / "m.safetensors"
    assert train_cli(*pair_set, out, "--epochs", "1", "--no-amp", "-q").exit_code == 0
    assert load_model(out)[1].provenance["options"]["amp"] is False


# --- the train command ----------------------------------------------------------------------------------------


def test_train_command_end_to_end(pair_set, tmp_path):
    out = tmp_path / "models" / "cli.safetensors"
    result = train_cli(*pair_set, out, "--epochs", "2")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("source: ") and "weight 1: 10 training, 2 validation, 0 sealed pages" in lines[0]
    assert lines[1].startswith("10 training pages, 2 validation pages")
    assert sum(line.startswith("epoch ") for line in lines) == 2
    assert squeeze(f"wrote {out} (epoch ") in squeeze(result.stderr)
    model, about = load_model(out)
    assert model.config == TINY
    record = about.provenance
    assert record["history"][0]["epoch"] == 1 and record["epoch"] == record["best_epoch"]
    assert checkpoint_path(out).exists()


@pytest.mark.parametrize("loss", ["bce", "l1"])
def test_train_command_other_losses(pair_set, tmp_path, loss):
    out = tmp_path / f"{loss}.safetensors"
    result = train_cli(*pair_set, out, "--epochs", "1", "--loss", loss, "--quiet")
    assert result.exit_code == 0, result.output
    assert load_model(out)[1].provenance["options"]["loss"] == loss
    assert squeeze(result.stderr).startswith(squeeze(f"wrote {out} (epoch 1, validation RMSE "))  # --quiet


def test_train_command_with_explicit_validation_folders(pair_set, tmp_path):
    val_dirty, val_clean = make_pair_set(tmp_path / "val", pages=1, seed=7)
    out = tmp_path / "m.safetensors"
    result = train_cli(*pair_set, out, "--epochs", "1", "--val-pairs", f"{val_dirty}:{val_clean}",
                       "--val-fraction", "0")
    assert result.exit_code == 0, result.output
    assert squeeze(f"{PAGES * VARIANTS} training pages, {VARIANTS} validation pages") in squeeze(result.stderr)
    assert load_model(out)[1].provenance["val_pages"] == VARIANTS
    half = train_cli(*pair_set, tmp_path / "n.safetensors", "--epochs", "1", "--val-pairs", str(val_dirty))
    assert half.exit_code == 2 and "expected DIRTY:CLEAN" in half.stderr and not (tmp_path / "n.safetensors").exists()


def test_train_command_interrupted_then_resumed(pair_set, tmp_path, monkeypatch):
    import cleandoc.train as train_module

    real_rmse, calls = train_module.pooled_rmse, []

    def ctrl_c_in_second_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_rmse(*args, **kwargs)

    out = tmp_path / "m.safetensors"
    monkeypatch.setattr(train_module, "pooled_rmse", ctrl_c_in_second_validation)
    stopped = train_cli(*pair_set, out, "--epochs", "2", "--quiet")
    monkeypatch.undo()
    assert stopped.exit_code == 130
    assert "--resume" in stopped.stderr and len(stopped.stderr.strip().splitlines()) == 1
    assert load_checkpoint(checkpoint_path(out))[2]["epoch"] == 1

    resumed = train_cli(*pair_set, out, "--epochs", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    epoch_lines = [line for line in resumed.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["2/2"]  # only the missing epoch ran
    assert [h["epoch"] for h in load_checkpoint(checkpoint_path(out))[2]["history"]] == [1, 2]


def test_train_command_lists_mismatched_pairs(tmp_path):
    dirty, clean = tmp_path / "dirty", tmp_path / "clean"
    page = np.full((40, 40), 200, np.uint8)
    write_png(dirty / "ok.png", page)
    write_png(clean / "ok.png", page)
    write_png(dirty / "only_dirty.png", page)
    write_png(clean / "only_clean.png", page)
    out = tmp_path / "m.safetensors"
    result = train_cli(dirty, clean, out, "--epochs", "1")
    assert result.exit_code == 2
    assert str(dirty / "only_dirty.png") in result.stderr and str(clean / "only_clean.png") in result.stderr
    assert "ok.png" not in result.stderr
    assert not out.exists()


def test_train_command_rejects_bad_widths_and_resume_without_checkpoint(pair_set, tmp_path):
    bad = cli("train", "--pairs", f"{pair_set[0]}:{pair_set[1]}", "-o", tmp_path / "m.safetensors",
              "--widths", "8,x")
    assert bad.exit_code == 2 and "--widths" in bad.stderr
    none = cli("train", "-o", tmp_path / "m.safetensors")
    assert none.exit_code == 2 and "--pairs DIRTY:CLEAN or --pages CLEAN" in none.stderr
    nothing = train_cli(*pair_set, tmp_path / "m.safetensors", "--resume")
    assert nothing.exit_code == 2 and "no checkpoint" in nothing.stderr


def test_train_command_result_is_one_line_whatever_the_path_length(pair_set, tmp_path):
    out = tmp_path / ("a-rather-long-folder-name-for-the-model-files-of-this-run" * 2) / "m.safetensors"
    result = train_cli(*pair_set, out, "--epochs", "1", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[-1].startswith(f"wrote {out} (epoch 1")


# --- the real data set, when this machine has it ------------------------------------------------------------


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is not present")
def test_noisyoffice_pairs_load_and_group():
    pairs = find_pairs(SHARED_DATA / "train", SHARED_DATA / "train_cleaned")
    assert len(pairs) >= 100
    pages = load_pairs(pairs[:6])
    assert all(dirty.shape == clean.shape and dirty.dtype == np.float32 for dirty, clean in pages)
    groups = page_groups([clean for _, clean in pages])
    split = split_by_group(groups, 0.34, 0)
    assert not {groups[i] for i in split.train} & {groups[i] for i in split.val}


def test_contractive_penalty_is_zero_for_a_constant_encoder_and_positive_otherwise():
    from cleandoc.models import build_model
    from cleandoc.train import contractive_penalty

    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    model = build_model(TINY)
    assert contractive_penalty(model, x).item() > 0
    with torch.no_grad():  # weights zero, biases kept: the code no longer depends on the input
        for name, parameter in model.named_parameters():
            if name.startswith(("stem", "down", "enc")) and name.endswith("weight"):
                parameter.zero_()
    assert contractive_penalty(model, x).item() == 0


def test_training_with_the_contractive_penalty_runs_and_records_it(pair_set, tmp_path):
    dirty, clean = pair_set
    options = TrainOptions(model=TINY, epochs=1, patch_size=32, batch_size=4, patches_per_epoch=8, contractive=0.1)
    state = from_folders(dirty, clean, tmp_path / "m.safetensors", options)
    assert state["epoch"] == 1 and load_model(tmp_path / "m.safetensors")[1].provenance["options"]["contractive"] == 0.1


def test_train_cli_builds_the_network_its_options_describe(pair_set, tmp_path):
    out = tmp_path / "k.safetensors"
    result = train_cli(*pair_set, out, "--kernel", "3", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert load_model(out)[1].config == {**TINY, "kernel": 3}


def test_the_contractive_penalty_changes_the_gradient_only_when_on():
    from cleandoc.train import _loss, contractive_penalty

    torch.manual_seed(0)
    model = build_model(TINY)
    dirty, clean = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)

    def gradient(weight: float) -> torch.Tensor:
        model.zero_grad()
        torch.manual_seed(1)  # the same random direction for the estimate
        loss = _loss(model, dirty, clean, "mse")
        if weight:
            loss = loss + weight * contractive_penalty(model, dirty)
        loss.backward()
        return model.stem[0].weight.grad.clone()

    plain = gradient(0.0)
    assert torch.equal(gradient(0.0), plain)
    assert not torch.allclose(gradient(1.0), plain)


def test_init_fine_tunes_from_the_given_weights(pair_set, tmp_path):
    torch.manual_seed(11)
    start = build_model(TINY)
    with torch.no_grad():
        start.head.bias.fill_(1.5)  # a mark no fresh network has
    from cleandoc.store import save_model

    save_model(start, tmp_path / "start.safetensors")
    out = tmp_path / "tuned.safetensors"
    state = from_folders(*pair_set, out, tiny_options(epochs=1, lr=1e-9), init=tmp_path / "start.safetensors",
                         device="cpu")
    tuned, about = load_model(out)
    assert state["epoch"] == 1 and about.provenance["initialised_from"] == str(tmp_path / "start.safetensors")
    for key, value in start.state_dict().items():  # a tiny learning rate: still the starting weights
        assert torch.allclose(tuned.state_dict()[key], value, atol=1e-6), key
    fresh = from_folders(*pair_set, tmp_path / "fresh.safetensors", tiny_options(epochs=1, lr=1e-9), device="cpu")
    assert fresh["epoch"] == 1
    assert not torch.allclose(load_model(tmp_path / "fresh.safetensors")[0].head.bias, start.head.bias)


def test_fine_tuning_refuses_to_train_on_the_pages_the_init_model_held_out(pair_set, trained, tmp_path):
    groups = page_groups([clean for _, clean in load_pairs(find_pairs(*pair_set))])
    held_out = set(split_by_group(groups, 0.2, 0).val)  # the trained fixture's split: seed 0
    seed = next(s for s in range(1, 100) if held_out & set(split_by_group(groups, 0.2, s).train))
    leak = train_cli(*pair_set, tmp_path / "leak.safetensors", "--init", trained["out"], "--seed", str(seed),
                     "--epochs", "1")
    assert leak.exit_code == 2 and len(leak.stderr.strip().splitlines()) == 1, leak.output
    assert "heldoutbytherunthatmade" in squeeze(leak.stderr)
    assert not (tmp_path / "leak.safetensors").exists()
    same_split = train_cli(*pair_set, tmp_path / "ok.safetensors", "--init", trained["out"], "--epochs", "1")
    assert same_split.exit_code == 0, same_split.output


def test_evaluate_finds_a_models_held_out_pages_from_its_file(pair_set, tmp_path):
    import json

    out = tmp_path / "m.safetensors"
    state = train_from_sources([Source(clean=pair_set[1], dirty=pair_set[0], sealed=0.2)], out,
                               tiny_options(epochs=1), device="cpu")
    result = cli("evaluate", "--held-out", "val", "--model", out, "--device", "cpu", "--precision", "fp32", "--json",
                 tmp_path / "v.json")
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "v.json").read_text())
    assert figures["pages"] == VARIANTS and figures["rmse"] == pytest.approx(state["best_rmse"], abs=1e-6)
    sealed = cli("evaluate", "--held-out", "sealed", "--model", out, "--device", "cpu", "--json", tmp_path / "s.json")
    assert sealed.exit_code == 0 and json.loads((tmp_path / "s.json").read_text())["pages"] == VARIANTS
    names = {p["name"] for p in figures["per_page"]} | {p["name"] for p in json.loads(
        (tmp_path / "s.json").read_text())["per_page"]}
    assert len(names) == 2 * VARIANTS  # two different page groups
    neither = cli("evaluate", "--model", out)
    assert neither.exit_code == 2 and "--held-out" in neither.stderr


def test_ink_weight_counts_the_targets_ink_pixels_more():
    clean = torch.ones(1, 1, 12, 12)
    clean[..., 2:10, 2:10] = 0.0  # 64 ink pixels, 80 paper

    class InkWrong(torch.nn.Module):  # exact on paper, off by 0.5 on ink
        binary_style = False

        def logits(self, x, binary=None):
            return torch.where(clean < 0.5, 0.0, 20.0)

    assert float(_loss(InkWrong(), clean, clean, "mse")) == pytest.approx(0.25 * 64 / 144)
    assert float(_loss(InkWrong(), clean, clean, "mse", 4)) == pytest.approx(0.25 * 4 * 64 / (4 * 64 + 80))


def test_the_loss_takes_the_teachers_share_against_the_teachers_page():
    clean = torch.ones(1, 1, 8, 8)
    clean[..., 2:6, 2:6] = 0.0

    class Fixed(torch.nn.Module):
        binary_style = False

        def __init__(self, logit: float):
            super().__init__()
            self.logit = logit

        def logits(self, x, binary=None):
            return torch.full_like(x, self.logit)

    student, grey_teacher = Fixed(0.0), Fixed(0.0)  # both say 0.5 everywhere
    to_target = float(_loss(student, clean, clean, "mse"))
    assert to_target == pytest.approx(0.25)
    assert float(_loss(student, clean, clean, "mse", teacher=grey_teacher, teacher_weight=1.0)) == pytest.approx(0)
    assert float(_loss(student, clean, clean, "mse", teacher=grey_teacher, teacher_weight=0.4)) == \
        pytest.approx(0.6 * to_target)


def test_a_student_learns_the_teachers_page_and_records_its_teacher(pair_set, trained, tmp_path):
    """A student taught by the trained model alone (a lower learning rate would not get there in an epoch or two)
    comes closer to the teacher's cleaned pages than to anything else; a teacher that lacks the student's binary
    style, or whose held-out pages would be trained on, is refused with one line."""
    out = tmp_path / "student.safetensors"
    student_options = tiny_options(epochs=4, teacher=str(trained["out"]), teacher_weight=1.0)
    from_folders(*pair_set, out, student_options, device="cpu")
    student, about = load_model(out)
    teacher = load_model(trained["out"])[0]
    assert about.provenance["options"]["teacher"] == str(trained["out"])
    pages = val_pages(pair_set)
    taught = [(dirty, Cleaner(teacher).clean(dirty)) for dirty, _ in pages]
    fresh = build_model(TINY)
    assert pooled_rmse(Cleaner(student), taught) < 0.5 * pooled_rmse(Cleaner(fresh), taught)
    no_style = train_cli(*pair_set, tmp_path / "s2.safetensors", "--teacher", trained["out"], "--binary-style",
                         "--epochs", "1")
    assert no_style.exit_code == 2 and "nobinarystyle" in squeeze(no_style.stderr), no_style.output
    groups = page_groups([clean for _, clean in load_pairs(find_pairs(*pair_set))])
    seed = next(s for s in range(1, 100) if set(split_by_group(groups, 0.2, 0).val) & set(
        split_by_group(groups, 0.2, s).train))
    leak = train_cli(*pair_set, tmp_path / "s3.safetensors", "--teacher", trained["out"], "--seed", str(seed),
                     "--epochs", "1")
    assert leak.exit_code == 2 and "heldoutbytherunthatmade" in squeeze(leak.stderr), leak.output


def test_ink_bias_is_set_on_the_trained_model_and_kept_from_init(pair_set, tmp_path):
    leaning = tmp_path / "leaning.safetensors"
    from_folders(*pair_set, leaning, tiny_options(epochs=1, ink_bias=0.3), device="cpu")
    model, about = load_model(leaning)
    assert model.ink_bias == 0.3 and about.config["ink_bias"] == 0.3
    kept = tmp_path / "kept.safetensors"
    from_folders(*pair_set, kept, tiny_options(epochs=1), init=leaning, device="cpu")
    assert load_model(kept)[0].ink_bias == 0.3
    cleared = tmp_path / "cleared.safetensors"
    from_folders(*pair_set, cleared, tiny_options(epochs=1, ink_bias=0.0), init=leaning, device="cpu")
    assert "ink_bias" not in load_model(cleared)[1].config
    blended = tmp_path / "blended.safetensors"
    from_folders(*pair_set, blended, tiny_options(epochs=0, faint_ink_bias=0.6), init=leaning, device="cpu")
    assert (load_model(blended)[0].ink_bias, load_model(blended)[0].faint_ink_bias) == (0.3, 0.6)  # 0.3 kept
    again = tmp_path / "again.safetensors"
    from_folders(*pair_set, again, tiny_options(epochs=0, ink_bias=0.2), init=blended, device="cpu")
    assert (load_model(again)[0].ink_bias, load_model(again)[0].faint_ink_bias) == (0.2, 0.6)  # 0.6 kept


def test_zero_epochs_writes_the_init_model_with_new_settings_untrained(pair_set, tmp_path):
    start = tmp_path / "start.safetensors"
    from_folders(*pair_set, start, tiny_options(epochs=1), device="cpu")
    out = tmp_path / "leaning.safetensors"
    state = from_folders(*pair_set, out, tiny_options(epochs=0, ink_bias=0.4), init=start, device="cpu")
    before, after = load_model(start)[0], load_model(out)
    assert after[0].ink_bias == 0.4 and state["epoch"] == 0
    assert all(torch.equal(after[0].state_dict()[key], value) for key, value in before.state_dict().items())
    unbiased = load_model(start)[1].figures["val_rmse"]  # the same validation pages, without the bias
    assert after[1].figures["val_rmse"] == state["best_rmse"] != pytest.approx(unbiased, abs=1e-6)
    with pytest.raises(TrainingError, match="--epochs 0 .* give --init"):
        from_folders(*pair_set, tmp_path / "x.safetensors", tiny_options(epochs=0), device="cpu")


def test_the_loss_asks_only_a_binary_style_model_for_it_on_the_patches_flagged():
    asked = []

    class Recorder(torch.nn.Module):
        binary_style = True

        def logits(self, x, binary=None):
            asked.append(binary)
            return torch.zeros_like(x)

    clean, flags = torch.ones(2, 1, 8, 8), torch.tensor([1.0, 0.0])
    _loss(Recorder(), clean, clean, "mse", binary=flags)
    Recorder.binary_style = False
    _loss(Recorder(), clean, clean, "mse", binary=flags)
    assert asked[0] is flags and asked[1] is None


def binary_pair_set(root: Path) -> tuple[Path, Path]:
    """Pairs whose targets are ink masks (0 and 255), as DIBCO's ground truth is."""
    dirty_dir, clean_dir = make_pair_set(root)
    for path in clean_dir.iterdir():
        page = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(path), np.where(page >= 128, 255, 0).astype(np.uint8))
    return dirty_dir, clean_dir


def test_binary_style_is_trained_by_ink_masks_only(pair_set, tmp_path):
    masks = binary_pair_set(tmp_path / "masks")
    out = tmp_path / "styled.safetensors"
    from_folders(*masks, out, tiny_options(epochs=1, binary_style=True), device="cpu")
    model, about = load_model(out)
    assert about.config["binary_style"] is True
    assert any(film.abs().max() > 0 for film in model.binary_film)
    grey = tmp_path / "grey.safetensors"
    from_folders(*pair_set, grey, tiny_options(epochs=1, binary_style=True), device="cpu")
    assert all(not film.any() for film in load_model(grey)[0].binary_film)  # no ink mask: nothing to learn
    again = tmp_path / "again.safetensors"
    from_folders(*masks, again, tiny_options(epochs=1), init=out, device="cpu")
    assert load_model(again)[0].binary_style  # kept from --init
