"""Denoising autoencoder architectures, built by name from a small config.

Every model maps a grayscale page in [0, 1] (shape B×1×H×W) to its clean version and is strictly local:
only convolutions and fixed resamplings, no normalisation statistics, no global pooling. Each one is a
`Denoiser`: it states what the tiler needs to cut a page into tiles whose stitched result is exact and whose
memory is bounded, and what the tools need to show it. A new architecture subclasses `Denoiser`, implements
its members and joins ARCHITECTURES; nothing else in cleandoc asks which architecture a model is.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from .options import MAX_INK_BIAS

# A model with a faint-ink bias measures how faint the ink near each pixel is by the input's local contrast: its
# brightest minus its darkest value in the CONTRAST_CELL-pixel square cells within CONTRAST_CELLS cells of the
# pixel's own (a 28-pixel square, wide enough to take in a stroke and the paper beside it at 600 dpi; cells,
# because pooling every pixel's own window would cost more than the network's first layers). At
# FAINT_INK_CONTRAST and below the faint-ink bias applies, at DARK_INK_CONTRAST and above the ink bias, and in
# between a blend: light ink (75% of the paper's brightness) leaves about 0.2, black ink on office paper 0.8.
CONTRAST_CELL, CONTRAST_CELLS = 4, 3
FAINT_INK_CONTRAST, DARK_INK_CONTRAST = 0.3, 0.7

INPUT_SKIP_GAIN = 6.0


def _conv(c_in: int, c_out: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=True)


def _check_sizes(arch: str, widths, **counts: int) -> list[int]:
    """Refuse sizes that make no network (or an absurd one, e.g. from a hostile model file) before any
    weights are allocated."""
    widths = list(widths)
    if not 1 <= len(widths) <= 8 or not all(isinstance(w, int) and 1 <= w <= 4096 for w in widths):
        raise ValueError(f"{arch} needs 1 to 8 widths, each an integer from 1 to 4096, got {widths!r}")
    for name, value in counts.items():
        if not isinstance(value, int) or not 1 <= value <= 8:
            raise ValueError(f"{arch} needs {name} to be an integer from 1 to 8, got {value!r}")
    return widths


def _input_logits(centred: torch.Tensor) -> torch.Tensor:
    """The input page (centred on 0) as logits, added to the network's output: at initialisation the model is
    close to the identity (a mild contrast stretch), so training starts from "do nothing" instead of having to
    learn it through a saturating sigmoid, which can collapse to an all-white page."""
    return INPUT_SKIP_GAIN * centred


def _block(c_in: int, c_out: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [_conv(c_in if i == 0 else c_out, c_out), _act()]
    return nn.Sequential(*layers)


def cell_contrast(x: torch.Tensor) -> torch.Tensor:
    """The local contrast of each CONTRAST_CELL-pixel cell (see CONTRAST_CELL), one value per cell; H and W must
    be multiples of CONTRAST_CELL, and the cells start at the top left, so a tile whose origin is a multiple of it
    sees the cells the whole page does."""
    side = 2 * CONTRAST_CELLS + 1

    def cell_max(cells: torch.Tensor) -> torch.Tensor:  # one row and one column at a time: two sides, not an area
        return F.max_pool2d(F.max_pool2d(cells, (1, side), 1, (0, CONTRAST_CELLS)), (side, 1), 1, (CONTRAST_CELLS, 0))

    return cell_max(F.max_pool2d(x, CONTRAST_CELL)) + cell_max(F.max_pool2d(-x, CONTRAST_CELL))


class Denoiser(nn.Module):
    """The interface every architecture implements.

    `arch` names it in model files; `config` is {"arch": arch, **constructor arguments}, which rebuilds it.
    `network_radius`: how far, in input pixels, an output logit can see (an upper bound), and `network_multiple`:
    what H and W must be multiples of; `receptive_radius` and `size_multiple` cover the ink bias's contrast cells
    too, which is what the tiler needs. `features_per_pixel`: the float values alive at once per input pixel at the
    peak of a forward pass in inference mode, which bounds a tile's activation memory. `first_conv`: the convolution
    that reads the page and the pixel-unshuffle factor in front of it (1: none), whose filters `cleandoc inspect`
    draws. `encode(x)`: the bottleneck code (what the contractive penalty regularises). `logits(x, binary)`: the
    clean page before the sigmoid (what the losses take). `ink_bias` (config key "ink_bias", absent when 0): how far
    cleaning moves every pixel's logit toward ink, past what the network predicts; the losses never see it.
    `faint_ink_bias` (config key "faint_ink_bias", absent when None: the ink bias everywhere): the bias where the
    ink is faint instead, blended with `ink_bias` by the input's local contrast (see `ink_bias_map`). `binary_style`
    (config key "binary_style", absent when false): the model can be asked, page by page, for a binary page as
    DIBCO's ground truth draws it (`binary` true) or for a grey page with soft edges, as clean scans have them
    (false); see `UNet.add_binary_style`."""

    arch: str
    config: dict
    ink_bias: float = 0.0
    faint_ink_bias: float | None = None
    binary_style: bool = False

    @property
    def network_radius(self) -> int:
        """How far, in input pixels, an output logit can see (an upper bound)."""
        raise NotImplementedError

    @property
    def receptive_radius(self) -> int:
        """The network's reach, and the contrast cells' when the ink bias depends on them."""
        cells = CONTRAST_CELL * (CONTRAST_CELLS + 1) - 1
        return max(self.network_radius, cells if self.faint_ink_bias is not None else 0)

    @property
    def network_multiple(self) -> int:
        """What H and W of the network's input must be multiples of."""
        raise NotImplementedError

    @property
    def size_multiple(self) -> int:
        """The network's multiple, and the contrast cell's when the ink bias depends on it."""
        return math.lcm(self.network_multiple, CONTRAST_CELL) if self.faint_ink_bias is not None else \
            self.network_multiple

    @property
    def features_per_pixel(self) -> float:
        raise NotImplementedError

    @property
    def first_conv(self) -> tuple[nn.Conv2d, int]:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, x: torch.Tensor, binary: torch.Tensor | None = None) -> torch.Tensor:
        """`binary`: one 0 or 1 per page of the batch (or None: all 0), read only by a model with binary_style."""
        raise NotImplementedError

    def add_binary_style(self) -> None:
        raise ValueError(f"the {self.arch} architecture has no binary style (the unet has)")

    def ink_bias_map(self, x: torch.Tensor) -> float | torch.Tensor:
        """How far cleaning moves each pixel's logit toward ink: the ink bias, or, with a faint-ink bias, that bias
        where the input's local contrast says the ink is faint and the ink bias where it is dark. Dark ink needs
        little help, faint ink more (the network brings the soft edges of faint strokes out as paper-grey), so only
        faint pages pay the bias's darker tones. Worked out per cell, then spread to the cell's pixels."""
        if self.faint_ink_bias is None:
            return self.ink_bias
        darkness = ((cell_contrast(x) - FAINT_INK_CONTRAST) / (DARK_INK_CONTRAST - FAINT_INK_CONTRAST)).clamp(0, 1)
        bias = self.faint_ink_bias + (self.ink_bias - self.faint_ink_bias) * darkness
        return F.interpolate(bias, scale_factor=CONTRAST_CELL, mode="nearest")

    def forward(self, x: torch.Tensor, binary: bool = False) -> torch.Tensor:
        style = torch.ones(x.shape[0], device=x.device) if binary and self.binary_style else None
        logits = self.logits(x, style)
        bias = self.ink_bias_map(x)
        return torch.sigmoid(logits if isinstance(bias, float) and bias == 0 else logits - bias)


class UNet(Denoiser):
    """U-Net denoiser: pixel-unshuffle stem, strided-conv encoder, bottleneck, transposed-conv decoder
    with skip connections, pixel-shuffle head.

    The stem folds `unshuffle`×`unshuffle` pixels into channels so most work runs at reduced resolution;
    `widths` gives the channel count of each level (the last one is the bottleneck); `convs` is the
    number of 3×3 convolutions per block. With `kernel` 0 the head predicts each pixel's logit; with an odd
    `kernel` it predicts, for each pixel, a kernel×kernel filter of the input and a bias (`_filter_input`),
    whose result is the logit. Either way the input's own logits are added.
    """

    arch = "unet"

    def __init__(self, widths: list[int] | tuple[int, ...] = (32, 64, 128), unshuffle: int = 2, convs: int = 2,
                 kernel: int = 0, binary_style: bool = False):
        super().__init__()
        w = _check_sizes(self.arch, widths, unshuffle=unshuffle, convs=convs)
        if kernel not in (0, 1, 3, 5):
            raise ValueError(f"{self.arch} needs kernel to be 0, 1, 3 or 5, got {kernel!r}")
        self.config = {"arch": self.arch, "widths": w, "unshuffle": unshuffle, "convs": convs}
        if kernel:  # absent when 0, so files from before per-pixel filters keep their config
            self.config["kernel"] = kernel
        self.unshuffle = unshuffle
        self.kernel = kernel
        self.stem = _block(unshuffle * unshuffle, w[0], convs)
        self.down = nn.ModuleList(_conv(w[i], w[i + 1], 3, stride=2) for i in range(len(w) - 1))
        self.enc = nn.ModuleList(_block(w[i + 1], w[i + 1], convs) for i in range(len(w) - 1))
        self.up = nn.ModuleList(nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in range(len(w) - 1))
        self.dec = nn.ModuleList(_block(2 * w[i], w[i], convs) for i in range(len(w) - 1))
        self.head = nn.Conv2d(w[0], unshuffle * unshuffle * (kernel * kernel + 1 if kernel else 1), 1)
        if binary_style:
            self.add_binary_style()

    def add_binary_style(self) -> None:
        """Give the model a second style of output, binary pages, beside the grey one it has: after the stem and
        after every block, a learned gain and shift of each channel that only binary pages get. Why: DIBCO's
        ground truth draws ink as hard black and white, clean office scans as soft grey edges, and one network
        asked for both learns neither. They start at zero, so a trained model keeps its output in both styles
        until it is trained further; a model that has them already is left as it is."""
        if self.binary_style:
            return
        widths = self.config["widths"]
        levels = [*widths, *reversed(widths[:-1])]  # stem and encoder blocks, then decoder blocks
        reference = self.head.weight
        self.binary_film = nn.ParameterList(nn.Parameter(reference.new_zeros(2, width)) for width in levels)
        self.binary_style = True
        self.config["binary_style"] = True

    def _styled(self, h: torch.Tensor, level: int, binary: torch.Tensor | None) -> torch.Tensor:
        if binary is None:
            return h
        gain, shift = (row.view(1, -1, 1, 1).to(h.dtype) for row in self.binary_film[level])
        on = binary.view(-1, 1, 1, 1).to(h.dtype)
        if h.requires_grad:
            return h * (1 + on * gain) + on * shift
        return h.mul_(1 + on * gain).add_(on * shift)  # in place: the binary style needs no more memory

    @property
    def network_multiple(self) -> int:
        return self.unshuffle * 2 ** len(self.down)

    @property
    def features_per_pixel(self) -> float:
        """Float values alive at once, per input pixel, at the peak of a forward pass in inference mode: what
        activation memory is, times 4 bytes. Besides the input and its cells (2) and every skip, the peak is in
        the finest decoder block (the coarser level's output it upsamples, the concatenation of two levels and up
        to two convolution outputs) or in the head (its features, and three full-resolution maps in flight; a
        kernel-3 or 5 filter adds a padded input and one shifted copy of it)."""
        widths, convs = self.config["widths"], self.config["convs"]
        level = [width / (self.unshuffle * 2**i) ** 2 for i, width in enumerate(widths)]
        coarser = level[1] + 2 * level[0] if len(widths) > 1 else 0
        decoder = coarser + min(convs, 2) * level[0]
        head = level[0] + (5 if self.kernel > 1 else 3)
        return 2 + sum(level[:-1]) + max(decoder, head)

    @property
    def network_radius(self) -> int:
        convs = self.config["convs"]
        scale, radius = self.unshuffle, self.unshuffle  # the unshuffle cell itself
        radius += convs * scale  # stem block
        for _ in self.down:
            radius += scale  # the strided conv reads one neighbour at the finer scale
            scale *= 2
            radius += convs * scale + scale  # the block, plus the coarser cell's own extent
        for _ in self.up:
            scale //= 2
            radius += scale + convs * scale  # transposed-conv cell, then the decoder block
        return radius + self.unshuffle + self.kernel // 2

    def _filter_input(self, h: torch.Tensor, x: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Each pixel's kernel×kernel filter of the input around it, plus a bias, as unshuffled cells: `cells` is
        `_cells(x)`, and the 1×1 head predicts from the features `h`, per tap and then for the bias, one channel
        per pixel of a cell. Why: a network that runs at reduced resolution predicts a per-pixel threshold and
        contrast (and, with kernel 3, a sharpening filter) almost for free, and the full-resolution detail of the
        text edges comes straight from the input. Each coefficient is predicted just before it is used, on
        cells, so a page holds a few full-resolution maps at a time, not kernel² + 1."""
        per_tap, kernel = cells.shape[1], self.kernel
        radius = kernel // 2
        height, width = x.shape[-2:]
        padded = F.pad(x - 0.5, (radius,) * 4) if radius else None  # kernel 1 reads only `cells`

        def coefficient(index: int) -> torch.Tensor:
            rows = slice(index * per_tap, (index + 1) * per_tap)
            return F.conv2d(h, self.head.weight[rows], self.head.bias[rows])

        logit = coefficient(kernel * kernel)  # the bias
        for tap in range(kernel * kernel):
            dy, dx = divmod(tap, kernel)
            shifted = cells if dy == dx == radius else F.pixel_unshuffle(
                padded[:, :, dy:dy + height, dx:dx + width], self.unshuffle)
            logit = torch.addcmul(logit, coefficient(tap), shifted)
        return logit

    def _cells(self, x: torch.Tensor) -> torch.Tensor:
        """The input, centred on 0, folded into unshuffle×unshuffle cells: what the stem reads and the per-pixel
        filter and input logits work on."""
        return F.pixel_unshuffle(x - 0.5, self.unshuffle)

    def _encode(self, cells: torch.Tensor, binary: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self._styled(self.stem(cells), 0, binary)
        skips = []
        for level, (down, enc) in enumerate(zip(self.down, self.enc), start=1):
            skips.append(h)
            h = self._styled(enc(F.leaky_relu(down(h), 0.1, inplace=True)), level, binary)
        return h, skips

    @property
    def first_conv(self) -> tuple[nn.Conv2d, int]:
        return self.stem[0], self.unshuffle

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._encode(self._cells(x))[0]

    def logits(self, x: torch.Tensor, binary: torch.Tensor | None = None) -> torch.Tensor:
        cells = self._cells(x)
        h, skips = self._encode(cells, binary)
        for level, (up, dec, skip) in enumerate(zip(reversed(self.up), reversed(self.dec), reversed(skips)),
                                                start=len(self.down) + 1):
            h = self._styled(dec(torch.cat([F.leaky_relu(up(h), 0.1, inplace=True), skip], dim=1)), level, binary)
        out = self._filter_input(h, x, cells) if self.kernel else self.head(h)
        # Unfolded from the standard layout: pixel_shuffle on a channels_last tensor is several times slower.
        return F.pixel_shuffle((out + _input_logits(cells)).contiguous(), self.unshuffle)


class ConvDAE(Denoiser):
    """The classic convolutional denoising autoencoder: strided-conv encoder down to a bottleneck and a
    transposed-conv decoder back up, with no encoder-decoder skip connections (only the input-logit skip every
    model has). A baseline and a teaching model."""

    arch = "dae"

    def __init__(self, widths: list[int] | tuple[int, ...] = (32, 64), convs: int = 1):
        super().__init__()
        self.config = {"arch": self.arch, "widths": _check_sizes(self.arch, widths, convs=convs), "convs": convs}
        w = [1] + self.config["widths"]
        self.encoder = nn.Sequential(
            *[nn.Sequential(_conv(w[i], w[i + 1], 3, stride=2), _act(), *_block(w[i + 1], w[i + 1], convs - 1))
              for i in range(len(w) - 1)]
        )
        self.decoder = nn.Sequential(
            *[nn.Sequential(nn.ConvTranspose2d(w[i + 1], w[i + 1], 2, stride=2), _act(), *_block(w[i + 1], w[i], 1))
              for i in reversed(range(1, len(w) - 1))],
            nn.ConvTranspose2d(w[1], w[1], 2, stride=2), _act(), _conv(w[1], 1),
        )

    @property
    def network_multiple(self) -> int:
        return 2 ** (len(self.config["widths"]))

    @property
    def features_per_pixel(self) -> float:
        """As for the U-Net: the peak is the last transposed convolution, which holds the input and its centred
        copy, the bottleneck code (the decoder's argument), the half-resolution features it reads (or, with one
        level, the next convolution's output) and its own full-resolution output."""
        widths = self.config["widths"]
        bottleneck = widths[-1] / 4 ** len(widths)
        return 2 + bottleneck + widths[0] + (widths[0] / 4 if len(widths) > 1 else 1)

    @property
    def network_radius(self) -> int:
        convs, levels = self.config["convs"], len(self.config["widths"])
        radius, scale = 0, 1
        for _ in range(levels):
            radius += scale  # strided conv
            scale *= 2
            radius += (convs - 1) * scale + scale
        for _ in range(levels):
            scale //= 2
            radius += 2 * scale  # transposed conv cell, then one conv at that scale
        return radius + 1

    @property
    def first_conv(self) -> tuple[nn.Conv2d, int]:
        return self.encoder[0][0], 1

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x - 0.5)

    def logits(self, x: torch.Tensor, binary: torch.Tensor | None = None) -> torch.Tensor:
        centred = x - 0.5
        return self.decoder(self.encoder(centred)) + _input_logits(centred)


ARCHITECTURES: dict[str, type[Denoiser]] = {UNet.arch: UNet, ConvDAE.arch: ConvDAE}


def build_model(config: dict) -> Denoiser:
    """Rebuild a model from its config: {"arch": name, **constructor arguments, "ink_bias": b (optional),
    "faint_ink_bias": f (optional)}."""
    config = dict(config)
    name = config.pop("arch", None)
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    ink_bias, faint_ink_bias = config.pop("ink_bias", 0.0), config.pop("faint_ink_bias", None)
    try:
        model = ARCHITECTURES[name](**config)
    except TypeError as exc:
        raise ValueError(f"bad settings for architecture {name!r}: {exc}") from None
    set_ink_bias(model, ink_bias, faint_ink_bias)
    return model


def set_ink_bias(model: Denoiser, ink_bias: float, faint_ink_bias: float | None = None) -> None:
    """Make cleaning move each pixel's logit `ink_bias` toward ink (0: as the network predicts), or
    `faint_ink_bias` where the ink is faint (None: `ink_bias` there too). A small bias keeps the soft edges of faint
    strokes ink, at the cost of slightly darker grey tones; training fits the network beneath it, so it is a choice
    about the finished model, made on validation pages."""
    biases = {"ink_bias": ink_bias} | ({} if faint_ink_bias is None else {"faint_ink_bias": faint_ink_bias})
    for name, value in biases.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= MAX_INK_BIAS:
            raise ValueError(f"{name} must be a number from 0 to {MAX_INK_BIAS:g}, got {value!r}")
    model.ink_bias = float(ink_bias)
    model.faint_ink_bias = None if faint_ink_bias is None else float(faint_ink_bias)
    for key in ("ink_bias", "faint_ink_bias"):
        model.config.pop(key, None)
    if ink_bias:
        model.config["ink_bias"] = float(ink_bias)
    if faint_ink_bias is not None:
        model.config["faint_ink_bias"] = float(faint_ink_bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _addcmul_flops(*shapes, out_shape, **options) -> int:
    """One multiply-add per output value (the flop counter's unit is half of one): what applying a per-pixel
    filter tap costs."""
    return 2 * math.prod(out_shape)


def multiply_adds_per_pixel(model: nn.Module) -> float:
    """Multiply-adds of one forward pass per input pixel, over every convolution and per-pixel filter tap
    (counted by torch's flop counter, which sees functional calls too): the model's arithmetic cost, whatever
    the machine."""
    side = 4 * model.size_multiple
    counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.addcmul: _addcmul_flops})
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 1, side, side, device=next(model.parameters()).device))
    return counter.get_total_flops() / 2 / side**2
