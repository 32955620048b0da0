"""The options of cleaning and training, with their defaults and what they mean: the one place both are written,
read by the library and by the command line (whose defaults and help come from here). No torch here, so that the
command line starts fast."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields

LOSSES = ("mse", "l1", "bce")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MAX_INK_BIAS = 2.0  # logits: at 2, a pixel the network puts at 0.88 comes out at half
DEFAULT_MAX_PIXELS = 30_000 * 30_000  # the largest page cleandoc decodes (a small file can claim a huge image)
# The architecture of the shipped default model: what `cleandoc train` builds unless told otherwise.
DEFAULT_ARCHITECTURE = {"arch": "unet", "widths": [24, 48, 96, 192, 384], "unshuffle": 2, "convs": 1,
                        "kernel": 1}


def _option(default, help: str):
    """A field with its help text; a list or dict default is copied for every instance."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class RunOptions:
    """How a `Cleaner` runs its model."""

    device: str = _option("auto", "auto (CUDA when present), cpu, cuda or cuda:N.")
    precision: str = _option("auto", "Arithmetic: auto is fp16 on CUDA, bf16 on CPUs with bf16 in hardware "
                                     "(AVX-512 BF16 or AMX), fp32 elsewhere.")
    threads: int | None = _option(None, "CPU threads for the model (default: one per core).")
    tile: int = _option(0, "Tile side in pixels; 0 picks tiles for the model, page and device.")
    batch_size: int = _option(0, "Tiles per model call; 0: one on a CPU, four on CUDA.")


@dataclass(frozen=True)
class CleanOptions:
    """How a list of pages is cleaned and written."""

    overwrite: bool = _option(False, "Replace outputs that already exist (default: skip them).")
    binarize: bool = _option(False, "Write 1-bit black and white pages: PNG, or TIFF with CCITT G4 compression.")
    workers: int = _option(0, "Threads decoding and encoding pages while the model runs; 0: one per core.")
    max_pixels: int = _option(DEFAULT_MAX_PIXELS, "Refuse pages with more pixels than this.")
    dpi: float | None = _option(None, "Resolution to render PDF pages that are not one scanned image at (default: "
                                      "the page's image resolution, else 300).")
    jpeg_quality: int | None = _option(None, "Write PDF pages (and JPEG images) as JPEG of this quality, 1-100 "
                                             "(default: PDF pages lossless, JPEG images at 95).")
    page_extension: str = _option(".png", "The extension, and so the format, of pages written as images.")


@dataclass(frozen=True)
class TrainOptions:
    model: dict = _option(DEFAULT_ARCHITECTURE, "The architecture to build: {'arch': name, **its settings}.")
    epochs: int = _option(40, "Epochs to train; 0 with --init: validate and write the --init model with this run's "
                              "settings (such as --ink-bias), untrained.")
    patch_size: int = _option(128, "Side of the training patches.")
    max_scale: float = _option(1.0, "Rescale half the patches by up to this factor, up or down (1: off).")
    patches_per_epoch: int = _option(2048, "Patches per epoch.")
    batch_size: int = _option(16, "Patches per step.")
    lr: float = _option(2e-3, "Peak learning rate (warm-up, then cosine decay).")
    weight_decay: float = _option(1e-4, "AdamW weight decay.")
    loss: str = _option("mse", "mse (Gaussian decoder), bce (Bernoulli decoder) or l1.")
    ink_weight: float = _option(1.0, "Weight of the loss on the target's ink pixels (darker than half) against "
                                     "paper; above 1, a model keeps faint and thin strokes rather than risk "
                                     "erasing them.")
    ink_bias: float | None = _option(None, "Logits by which the model's cleaning leans toward ink, past what the "
                                           f"network predicts (0 to {MAX_INK_BIAS:g}; default: the --init model's, "
                                           "else 0): faint strokes keep their soft edges, grey tones come out a "
                                           "little darker. Validation sees it; the loss does not.")
    faint_ink_bias: float | None = _option(None, "The bias where the ink is faint (the input's contrast near a "
                                                 "pixel low), blended with --ink-bias where it is dark, so only faint "
                                                 "ink pays the darker tones (default: the --init model's, else none: "
                                                 "--ink-bias everywhere).")
    binary_style: bool = _option(False, "Also learn a binary style of output, which --binarize asks for, from the "
                                        "patches whose target is pure black and white (ink masks such as DIBCO's "
                                        "ground truth); the grey style learns from the rest. An --init model "
                                        "that has it keeps it.")
    teacher: str | None = _option(None, "A model file whose cleaned page the network also learns to reproduce "
                                        "(distillation): a smaller or faster network learns what a trained model "
                                        "does on every patch, not only on the pages that have targets.")
    teacher_weight: float = _option(0.5, "With --teacher: the share of the loss taken against the teacher's page "
                                         "instead of the target (1: the teacher alone).")
    patience: int = _option(10, "Stop after this many epochs without a better validation RMSE; 0 never stops early.")
    seed: int = _option(0, "Makes a run repeatable on the same machine; also picks the page groups held out.")
    noise: list = _option([], "Corruption recipe for synthetic patches, steps NAME[:STRENGTH] applied in order.")
    synthetic_fraction: float = _option(0.5, "With a noise recipe: share of the real pairs' patches corrupted from "
                                             "their clean side instead of taken from the scan.")
    contractive: float = _option(0.0, "Weight of the contractive penalty on the encoder (0: off).")
    amp: bool = _option(True, "Mixed precision (bf16 autocast) on CUDA and on CPUs with bf16 arithmetic in "
                              "hardware (AVX-512 BF16 or AMX).")
    val_fraction: float = _option(0.2, "Share of each source's page groups held out for validation.")
    sealed_fraction: float = _option(0.0, "Share of each source's page groups sealed: neither trained nor "
                                          "validated on, for a final score.")


def default(options: type, name: str):
    """The default value of one option."""
    for item in fields(options):
        if item.name == name:
            return item.default_factory() if item.default is MISSING else item.default
    raise KeyError(name)


def help_text(options: type, name: str) -> str:
    """The help text of one option."""
    return next(item.metadata["help"] for item in fields(options) if item.name == name)
