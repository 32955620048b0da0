"""The architectures: honest receptive radius, strict locality, and build_model's contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from cleandoc.models import (
    ARCHITECTURES,
    INPUT_SKIP_GAIN,
    build_model,
    count_parameters,
    multiply_adds_per_pixel,
)
from cleandoc.store import SHIPPED_MODELS, load_model


def tiny(config: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(config).eval()


RF_CONFIGS = [
    {"arch": "unet", "widths": [8, 16]},
    {"arch": "unet", "widths": [8, 16, 32]},
    {"arch": "unet", "widths": [8], "unshuffle": 1, "convs": 1},
    {"arch": "unet", "widths": [8, 16], "unshuffle": 3, "convs": 1},
    {"arch": "unet", "widths": [4, 8, 8], "unshuffle": 1, "convs": 3},
    {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1, "kernel": 3},
    {"arch": "unet", "widths": [8, 16], "unshuffle": 4, "convs": 1, "kernel": 1},
    {"arch": "dae", "widths": [8]},
    {"arch": "dae", "widths": [8, 16]},
    {"arch": "dae", "widths": [4, 8], "convs": 3},
    {"arch": "dae", "widths": [4, 8, 8], "convs": 2},
]


def _ids(config: dict) -> str:
    return "-".join(f"{v}" for v in config.values()).replace(" ", "")


@pytest.mark.parametrize("config", RF_CONFIGS, ids=_ids)
def test_receptive_radius_is_an_honest_and_tight_bound(config):
    """Back-propagate from one output logit and look at which input pixels got a gradient.

    All offsets of the output pixel modulo size_multiple are covered along the diagonal and the
    anti-diagonal (strided layers make the field depend on the phase). Each probe is its own batch element,
    so one backward pass does them all (batch elements are independent, tested below). The input is large
    enough that no field reaches the border, so the empirical reach is not cut short."""
    model = tiny(config, seed=1)
    multiple, radius = model.size_multiple, model.receptive_radius
    size = (2 * radius + 3 * multiple) // multiple * multiple + multiple
    centre = size // 2 // multiple * multiple
    offsets = sorted({(a, a) for a in range(multiple)} | {(a, multiple - 1 - a) for a in range(multiple)})
    x = torch.rand(len(offsets), 1, size, size, requires_grad=True)
    out = model.logits(x)
    assert out.shape == x.shape
    picked = torch.stack([out[i, 0, centre + dy, centre + dx] for i, (dy, dx) in enumerate(offsets)])
    picked.sum().backward()
    grad = x.grad[:, 0]
    empirical = 0
    for i, (dy, dx) in enumerate(offsets):
        ys, xs = torch.nonzero(grad[i], as_tuple=True)
        assert len(ys) > 0
        # The field must not be clipped by the input border, or the empirical reach is meaningless.
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < size - 1 and xs.max() < size - 1
        reach = int(torch.maximum((ys - centre - dy).abs(), (xs - centre - dx).abs()).max())
        assert reach <= radius, f"offset {(dy, dx)}: an input {reach} px away matters, radius says {radius}"
        empirical = max(empirical, reach)
    assert radius <= 2 * empirical + multiple, f"radius {radius} is far looser than the empirical {empirical}"


@pytest.mark.parametrize("config", RF_CONFIGS[:2] + RF_CONFIGS[5:9], ids=_ids)
def test_no_normalisation_or_global_pooling(config):
    forbidden = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm,
                 nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                 nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout2d)
    model = tiny(config)
    bad = [name for name, module in model.named_modules() if isinstance(module, forbidden)]
    assert bad == []
    # ...nor any module carrying buffers (running statistics or the like).
    assert list(model.buffers()) == []


@pytest.mark.parametrize("config", RF_CONFIGS[:2] + RF_CONFIGS[5:9], ids=_ids)
def test_batch_elements_are_independent_and_mode_does_not_matter(config):
    model = tiny(config, seed=2)
    m = model.size_multiple
    torch.manual_seed(5)
    a = torch.rand(1, 1, 4 * m, 6 * m)
    b = torch.rand(1, 1, 4 * m, 6 * m) * 0.3 + 0.7  # very different statistics from a
    with torch.no_grad():
        alone = model(a)
        together = model(torch.cat([a, b]))
        other_partner = model(torch.cat([b * 0, a, b]))
        model.train()
        in_train = model(torch.cat([a, b]))
        model.eval()
    torch.testing.assert_close(together[:1], alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(other_partner[1:2], alone, atol=1e-6, rtol=0)
    torch.testing.assert_close(in_train, together, atol=1e-6, rtol=0)
    assert (together[1:] - together[:1]).abs().max() > 1e-4  # it does react to its input


@pytest.mark.parametrize("config", RF_CONFIGS[:2] + RF_CONFIGS[3:4] + RF_CONFIGS[5:7], ids=_ids)
def test_shapes_and_range(config):
    model = tiny(config)
    m = model.size_multiple
    for h, w in [(m, m), (2 * m, 5 * m), (7 * m, 3 * m)]:
        x = torch.rand(3, 1, h, w)
        with torch.no_grad():
            y = model(x)
            logits = model.logits(x)
        assert y.shape == x.shape
        assert y.dtype == torch.float32
        assert ((y > 0) & (y < 1)).all()
        torch.testing.assert_close(y, torch.sigmoid(logits))
    # Extreme inputs stay in (0, 1) and finite.
    with torch.no_grad():
        for value in (0.0, 1.0):
            y = model(torch.full((1, 1, 2 * m, 2 * m), value))
            assert torch.isfinite(y).all() and (y >= 0).all() and (y <= 1).all()


@pytest.mark.parametrize(("config", "multiple"), [
    ({"arch": "unet", "widths": [8]}, 2),
    ({"arch": "unet", "widths": [8, 16]}, 4),
    ({"arch": "unet", "widths": [8, 16, 32], "unshuffle": 3}, 12),
    ({"arch": "unet", "widths": [8, 16], "unshuffle": 1}, 2),
    ({"arch": "dae", "widths": [8]}, 2),
    ({"arch": "dae", "widths": [8, 16, 32]}, 8),
])
def test_size_multiple(config, multiple):
    model = tiny(config)
    assert model.size_multiple == multiple
    # A size that is not a multiple either fails or changes the shape: the multiple is a real constraint
    # (for unet the pixel-unshuffle or the skip concatenation rejects it).
    bad = torch.rand(1, 1, multiple * 2 + 1, multiple * 2)
    if multiple > 1:
        try:
            with torch.no_grad():
                out = model(bad)
        except RuntimeError:
            pass
        else:
            assert out.shape != bad.shape


@pytest.mark.parametrize("config", [
    {"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1},
    {"arch": "unet", "widths": [8, 16], "unshuffle": 4, "convs": 1, "kernel": 3},
    {"arch": "dae", "widths": [8, 16], "convs": 2},
])
def test_config_round_trips_through_build_model(config):
    model = tiny(config)
    assert model.config == config
    again = build_model(model.config)
    assert again.config == model.config
    assert type(again) is type(model)
    assert again.state_dict().keys() == model.state_dict().keys()
    assert all(again.state_dict()[k].shape == v.shape for k, v in model.state_dict().items())
    assert count_parameters(again) == count_parameters(model) > 0
    # build_model does not consume the caller's dict.
    assert "arch" in config


def test_config_defaults_are_filled_in():
    assert build_model({"arch": "unet"}).config == {"arch": "unet", "widths": [32, 64, 128], "unshuffle": 2,
                                                    "convs": 2}
    assert build_model({"arch": "unet", "kernel": 0}).config == build_model({"arch": "unet"}).config
    assert build_model({"arch": "dae"}).config == {"arch": "dae", "widths": [32, 64], "convs": 1}
    assert set(ARCHITECTURES) == {"unet", "dae"}


@pytest.mark.parametrize("config", [
    {"arch": "resnet"},
    {"arch": "UNET"},
    {"arch": None},
    {"widths": [8, 16]},
    {},
])
def test_build_model_rejects_unknown_arch(config):
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model(config)


@pytest.mark.parametrize("config", [
    {"arch": "unet", "width": [8, 16]},
    {"arch": "unet", "widths": [8, 16], "depth": 3},
    {"arch": "dae", "widths": [8], "unshuffle": 2},
    {"arch": "unet", "widths": []},
    {"arch": "unet", "widths": [8], "unshuffle": 0},
    {"arch": "unet", "widths": [8], "convs": 0},
    {"arch": "unet", "widths": [8], "kernel": 2},
    {"arch": "unet", "widths": [8], "kernel": 7},
    {"arch": "unet", "widths": [8], "kernel": "3"},
    {"arch": "dae", "widths": []},
    {"arch": "dae", "widths": [8], "convs": 0},
])
def test_build_model_rejects_bad_settings(config):
    with pytest.raises(ValueError):
        build_model(config)


# Configs as they could come out of a corrupt or hostile model file's metadata. build_model promises a
# ValueError for anything it cannot build; store.load_model relies on that to turn it into a ModelFileError.
@pytest.mark.parametrize("config", [
    {"arch": ["unet"]},                         # unhashable arch -> TypeError from `name not in ARCHITECTURES`
    {"arch": "unet", "widths": [-3]},           # negative width -> RuntimeError from torch
    {"arch": "dae", "widths": [8, -1]},
], ids=["arch-is-a-list", "unet-negative-width", "dae-negative-width"])
def test_build_model_rejects_malformed_config_values_with_value_error(config):
    with pytest.raises(ValueError):
        build_model(config)


class PeakLiveMemory(TorchDispatchMode):
    """Tracks the bytes of tensor storage alive after each operator, and their peak: what a forward pass really
    holds at once, which `features_per_pixel` claims to count (torch's own peak statistics are CUDA-only)."""

    def __init__(self, *inputs: torch.Tensor):
        super().__init__()
        self.alive: dict[StorageWeakRef, int] = {}
        self.peak = 0
        self._track(inputs)

    def _track(self, tensors) -> None:
        for tensor in tree_leaves(tensors):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                self.alive[StorageWeakRef(storage)] = storage.nbytes()
        self.alive = {ref: size for ref, size in self.alive.items() if not ref.expired()}
        self.peak = max(self.peak, sum(self.alive.values()))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._track(out)
        return out


SHIPPED_CONFIGS = [load_model(name)[1].config for name in SHIPPED_MODELS]  # read from the files, so they cannot drift


@pytest.mark.parametrize("config", RF_CONFIGS + SHIPPED_CONFIGS)
def test_features_per_pixel_is_the_peak_of_live_activations(config):
    """The automatic tile size budgets memory with it, so it must count what inference really holds at its peak
    (an earlier count of one layer per level was 3.5 times too low for a five-level model)."""
    model = tiny(config)
    side = 16 * model.size_multiple
    page = torch.rand(1, 1, side, side)
    with torch.inference_mode():
        tracker = PeakLiveMemory(page)
        with tracker:
            model(page)
    assert model.features_per_pixel * 4 * side**2 == pytest.approx(tracker.peak, rel=0.02)


def test_features_per_pixel_of_the_shipped_architecture():
    """Worked by hand: the shipped model peaks in its finest decoder block. 24-48-96-192-384 on a 2×2 grid, one
    convolution per block, a per-pixel gain: input and cells 2, skips 6 + 3 + 1.5 + 0.75, the upsampled level 3,
    the concatenation 12, one convolution output 6."""
    assert load_model("default")[0].features_per_pixel == 34.25


@pytest.mark.parametrize(("config", "expected"), [
    # stem 4→8 at 1/4 (72) + down 8→16 at 1/16 (72) + block 16→16 (144) + up 16→8, 2×2 kernel, per coarse
    # pixel (32) + decoder 16→8 at 1/4 (288) + 1×1 head 8→4 at 1/4 (8)
    ({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1}, 616),
    # the same with a per-pixel 3×3 filter: the head predicts 4×10 values per cell (80 instead of 8) and
    # applying the filter costs 9 per pixel
    ({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1, "kernel": 3}, 697),
    # 1→8 at 1/4 (18) + 8→16 at 1/16 (72) + up 16→16 (64) + 16→8 at 1/4 (288) + up 8→8 (64)
    # + 8→1 at full resolution (72)
    ({"arch": "dae", "widths": [8, 16], "convs": 1}, 578),
])
def test_multiply_adds_per_pixel_counts_every_convolution(config, expected):
    assert multiply_adds_per_pixel(build_model(config)) == expected


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_per_pixel_filter_applies_what_the_head_predicts(kernel):
    """With the head's weights zeroed, every pixel gets the filter in the head's bias: the centre tap on top of
    the fixed input gain, the others reading the neighbours at their offsets, and the bias added, which here
    differs between the four pixels of a 2×2 cell, so each lands on its own pixel."""
    model = tiny({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1, "kernel": kernel})
    taps, cells = kernel * kernel, 4
    coefficients = torch.zeros(taps + 1, cells)
    coefficients[0] = 0.5  # top-left tap (the centre one when kernel is 1, then overwritten)
    coefficients[taps // 2] = -2.0  # centre tap, added to the input gain
    coefficients[taps] = torch.tensor([0.25, 0.5, 0.75, 1.0])  # bias: cell pixels (0,0), (0,1), (1,0), (1,1)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(coefficients.flatten())
    x = torch.rand(2, 1, 16, 20)
    centred = x - 0.5
    r = kernel // 2
    top_left = torch.nn.functional.pad(centred, (r, r, r, r))[:, :, :16, :20]
    rows, cols = torch.arange(16)[:, None] % 2, torch.arange(20) % 2
    bias = 0.25 * (1 + 2 * rows + cols)
    expected = (INPUT_SKIP_GAIN - 2.0) * centred + bias + (0.5 * top_left if kernel > 1 else 0)
    torch.testing.assert_close(model.logits(x), expected)


def test_ink_bias_leans_cleaning_toward_ink_and_travels_in_the_config():
    torch.manual_seed(0)
    plain = build_model({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1})
    leaning = build_model({**plain.config, "ink_bias": 0.5})
    leaning.load_state_dict(plain.state_dict())
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(leaning.logits(x), plain.logits(x))  # what the losses take: the network alone
        assert torch.allclose(leaning(x), torch.sigmoid(plain.logits(x) - 0.5))
        assert (leaning(x) < plain(x)).all()  # darker everywhere: toward ink
    assert leaning.config["ink_bias"] == 0.5 and "ink_bias" not in plain.config
    assert build_model(leaning.config).ink_bias == 0.5
    assert "ink_bias" not in build_model({**plain.config, "ink_bias": 0}).config  # 0: as files without it


@pytest.mark.parametrize("bias", [-0.1, 2.5, "0.4", True, float("nan")])
def test_ink_bias_must_be_a_small_number(bias):
    with pytest.raises(ValueError, match="ink_bias"):
        build_model({"arch": "unet", "widths": [8], "ink_bias": bias})
    with pytest.raises(ValueError, match="faint_ink_bias"):
        build_model({"arch": "unet", "widths": [8], "ink_bias": 0.1, "faint_ink_bias": bias})


def test_faint_ink_bias_leans_faint_ink_further_than_dark_and_travels_in_the_config():
    torch.manual_seed(0)
    plain = build_model({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1})
    blended = build_model({**plain.config, "ink_bias": 0.1, "faint_ink_bias": 0.5})
    blended.load_state_dict(plain.state_dict())
    x = torch.full((1, 1, 96, 160), 0.85)
    x[..., 40:44, 10:60] = 0.65  # a faint stroke: contrast 0.2
    x[..., 40:44, 100:150] = 0.05  # a dark one: contrast 0.8
    with torch.no_grad():
        logits, out = plain.logits(x), blended(x)
    faint, dark = (..., slice(30, 54), slice(0, 70)), (..., slice(30, 54), slice(90, 160))
    torch.testing.assert_close(out[faint], torch.sigmoid(logits[faint] - 0.5))
    torch.testing.assert_close(out[dark], torch.sigmoid(logits[dark] - 0.1))
    small = build_model({"arch": "dae", "widths": [8], "convs": 1, "ink_bias": 0.1, "faint_ink_bias": 0.5})
    assert small.network_radius < small.receptive_radius == 15 and small.size_multiple == 4  # the contrast cells
    assert blended.config["faint_ink_bias"] == 0.5 and build_model(blended.config).faint_ink_bias == 0.5
    assert "faint_ink_bias" not in build_model({**plain.config, "ink_bias": 0.3}).config  # one bias everywhere


def test_binary_style_starts_as_the_grey_output_and_changes_only_pages_asked_for_it():
    grey = tiny({"arch": "unet", "widths": [8, 16], "unshuffle": 2, "convs": 1})
    styled = build_model({**grey.config, "binary_style": True}).eval()
    missing = styled.load_state_dict(grey.state_dict(), strict=False).missing_keys
    assert missing and all(key.startswith("binary_film.") for key in missing)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(styled(x), grey(x)) and torch.allclose(styled(x, True), grey(x))  # zero at the start
        for film in styled.binary_film:
            film.normal_()
        assert torch.equal(styled(x), grey(x))  # the grey style never reads the film
        assert (styled(x, True) - grey(x)).abs().max() > 0.05
        mixed = styled.logits(x, torch.tensor([1.0, 0.0]))  # page by page within one batch
        torch.testing.assert_close(mixed[:1], styled.logits(x[:1], torch.ones(1)))
        torch.testing.assert_close(mixed[1:], grey.logits(x[1:]))
    assert styled.config["binary_style"] is True and "binary_style" not in grey.config
    assert build_model(styled.config).binary_style and not grey.binary_style
    grey.add_binary_style()
    assert grey.binary_style and len(grey.binary_film) == 3  # stem, one encoder block, one decoder block
    with pytest.raises(ValueError, match="binary style"):
        build_model({"arch": "dae", "widths": [8]}).add_binary_style()
