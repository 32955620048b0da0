"""Synthetic corruption of clean pages, for training a denoising autoencoder: corrupt a clean page x into x̃
with a known process and train the model to give x back.

Every corruption is a function `(page, strength, rng) -> new page` on a float32 H×W page in [0, 1] (1 is white
paper). It never modifies its input, keeps shape and dtype, stays in [0, 1], draws all its randomness from
`rng` (same seed, same output) and draws the same random numbers whatever the strength, so a larger strength
changes the same page more. Strength 0 gives the input back. Everything is vectorised with numpy and OpenCV so
corruption keeps up with training.

`NoiseBank` transfers real degradation instead: the background of real dirty scans laid over other clean pages.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Corruption = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

SPECKLE_SEED_RATE = 0.005  # seeds per pixel at strength 1: dots cover about 5% of the page
STAIN_SCALE = 4  # stains are smooth, so they are drawn at a quarter of the page resolution
INK_MARGIN = 1  # px of paper around ink left out of a noise layer: anti-aliased or misaligned ink edges
INPAINT_RADIUS = 3


def _finish(page: np.ndarray) -> np.ndarray:
    return np.clip(page, 0.0, 1.0).astype(np.float32, copy=False)


def _rescale(field: np.ndarray) -> np.ndarray:
    """Stretch to exactly [0, 1], so a strength can say how dark the darkest point gets."""
    low, span = field.min(), field.max() - field.min()
    return (field - low) / span if span > 0 else np.zeros_like(field)


def _smooth_field(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """A random low-frequency field in [0, 1]: cells×cells random values, smoothly interpolated."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    return _rescale(cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC))


def _disk(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


# Classic DAE corruptions.

def gaussian(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Additive white Gaussian noise with standard deviation `strength`."""
    return _finish(page + np.float32(strength) * rng.standard_normal(page.shape, dtype=np.float32))


def mask(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Masking noise: each pixel independently set to 0 with probability `strength`, as in the classic DAE.
    Here 0 is ink, so masked pixels read as black specks; a variant masking to the paper value is not needed
    because `saltpepper` covers white specks."""
    return _finish(np.where(rng.random(page.shape, dtype=np.float32) < strength, np.float32(0), page))


def saltpepper(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A fraction `strength` of the pixels set to 0 or 1, half each."""
    u = rng.random(page.shape, dtype=np.float32)
    # Among hit pixels (u < strength), u is uniform: its lower half becomes pepper, its upper half salt.
    return _finish(np.where(u < strength, (u >= strength / 2).astype(np.float32), page))


# Document degradations.

def blur(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Scanner optics or defocus: Gaussian blur with sigma `strength` pixels. Uses no randomness."""
    if strength <= 0:
        return page.copy()
    return _finish(cv2.GaussianBlur(page, (0, 0), strength, borderType=cv2.BORDER_REFLECT))


def jpeg(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A JPEG round trip, as scans are usually stored: strength 0 to 1 maps to quality 95 to 5 (clipped to
    that range). Uses no randomness."""
    quality = round(95 - 90 * min(max(strength, 0.0), 1.0))
    pixels = np.rint(np.clip(page, 0.0, 1.0) * 255).astype(np.uint8)
    _, data = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE).astype(np.float32) / np.float32(255)


def illumination(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Uneven lighting from a scanner lid or a camera: a linear falloff, a smooth random field and a shadow
    along one edge (the book gutter), multiplied in so the darkest point loses `strength` of its brightness
    and the brightest keeps all of it."""
    h, w = page.shape
    yy = np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    shading = rng.uniform(0.3, 1.0) * (np.cos(angle) * xx + np.sin(angle) * yy)
    shading = shading + rng.uniform(0.3, 1.0) * _smooth_field((h, w), 3, rng)
    edge_distance = (0.5 + yy, 0.5 - yy, 0.5 + xx, 0.5 - xx)[rng.integers(4)]
    shading = shading + rng.uniform(0.0, 1.0) * np.exp(-edge_distance / rng.uniform(0.03, 0.15))
    return _finish(page * (1 - np.float32(strength) * _rescale(shading)))


def texture(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Paper grain and tint: a random grey level of the paper plus low-pass (fibre-like, slightly
    anisotropic) noise, multiplied in so that no pixel darkens by more than `strength`."""
    noise = rng.standard_normal(page.shape, dtype=np.float32)
    grain = cv2.GaussianBlur(noise, (0, 0), rng.uniform(0.5, 2.5), sigmaY=rng.uniform(0.5, 2.5),
                             borderType=cv2.BORDER_REFLECT)
    grain /= max(float(grain.std()), 1e-6)
    darkness = np.clip(rng.uniform(0.2, 0.7) + 0.3 * grain, 0.0, 1.0)
    return _finish(page * (1 - np.float32(strength) * darkness))


def stains(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """One to four soft blotches or rings (coffee, water, foxing) with irregular outlines, multiplied in.
    Each darkens by up to `strength`; where stains overlap the darker one wins, so no pixel darkens more."""
    h, w = page.shape
    sh, sw = max(1, h // STAIN_SCALE), max(1, w // STAIN_SCALE)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    darkness = np.zeros((sh, sw), np.float32)
    for _ in range(rng.integers(1, 5)):
        dy, dx = yy - rng.uniform(0, sh), xx - rng.uniform(0, sw)
        theta = np.arctan2(dy, dx)
        wobble = 1 + sum(rng.uniform(0, 0.15) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
        rho = np.hypot(dy, dx) / (rng.uniform(0.05, 0.3) * max(sh, sw) * wobble)  # 1 on the outline
        level, softness, is_ring = rng.uniform(0.3, 1.0), rng.uniform(0.05, 0.3), rng.random() < 0.5
        inside = 0.5 - 0.5 * np.tanh((rho - 1) / (2 * softness))  # a logistic step that cannot overflow
        if is_ring:  # coffee ring: a dark rim around a faint inside
            stain = np.maximum(np.exp(-((rho - 1) / (softness / 2)) ** 2), 0.3 * inside)
        else:
            stain = inside
        darkness = np.maximum(darkness, level * stain)
    darkness = cv2.resize(darkness, (w, h), interpolation=cv2.INTER_LINEAR)
    return _finish(page * (1 - np.float32(strength) * darkness))


def ink(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Worn or wet printing, one of two at random: faded ink, its darkness moved toward the paper by up to
    `strength` (patchily, as toner wears unevenly), or bleeding ink, a grey erosion of the page by a 3 or 5 px
    disk (dark ink spreads) mixed in by `strength`."""
    if rng.random() < 0.5:
        patchiness = 0.5 + 0.5 * _smooth_field(page.shape, 4, rng)
        return _finish(page + np.float32(strength) * patchiness * (1 - page))
    bled = cv2.erode(page, _disk(int(rng.choice([3, 5]))), borderType=cv2.BORDER_REFLECT)
    return _finish(page + np.float32(strength) * (bled - page))


def faint_ink(page: np.ndarray, contrast: float, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """The page printed or written with light ink, on toned, unevenly lit paper, scanned softly: ink keeps
    `contrast` of its darkness against the paper (1 - ink / paper: 0.25 puts the ink at 75% of the paper's
    brightness), the paper is toned down by up to 40% × `strength`, lit unevenly by up to 30% × `strength`,
    blurred by up to 0.8 px and given sensor noise of up to 0.04 (both × `strength`). Pages and strokes that
    must survive cleaning look like this (`bench/bench.py` scores a model on them)."""
    paper = 1 - np.float32(strength * rng.uniform(0.0, 0.4))
    lighting = 1 - np.float32(strength * rng.uniform(0.0, 0.3)) * _smooth_field(page.shape, 3, rng)
    sigma, noise = strength * rng.uniform(0.0, 0.8), strength * rng.uniform(0.0, 0.04)
    out = paper * lighting * (1 - np.float32(contrast) * (1 - page))
    if sigma > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return _finish(out + np.float32(noise) * rng.standard_normal(page.shape, dtype=np.float32))


def faint(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Light ink on toned paper (`faint_ink`), at a random contrast from 1 down to 1 - 0.8 × `strength` (0.2 at the
    default 1): the pages a cleaner must not mistake for dirt, whose target keeps every stroke dark."""
    return faint_ink(page, 1 - 0.8 * strength * rng.random(), rng, strength)


def speckle(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Dust and toner specks: sparse dark dots 1, 3 or 5 px wide and 0.5 to 1 dark. Each pixel seeds a dot
    with probability `strength` × SPECKLE_SEED_RATE, so strength 1 covers about 5% of the page."""
    seeds = np.flatnonzero(rng.random(page.shape, dtype=np.float32) < strength * SPECKLE_SEED_RATE)
    sizes = rng.integers(0, 3, seeds.size)
    darkness = rng.uniform(0.5, 1.0, seeds.size).astype(np.float32)
    dots = np.zeros(page.shape, np.float32)
    for k, diameter in enumerate((1, 3, 5)):
        centres = np.zeros(page.shape, np.float32)
        centres.flat[seeds[sizes == k]] = darkness[sizes == k]
        dots = np.maximum(dots, cv2.dilate(centres, _disk(diameter)))
    return _finish(np.minimum(page, 1 - dots))


def scanlines(page: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Scanner streaks along the scan direction (horizontal or vertical at random): one to five thin lines,
    mostly darker (dirt on the glass), some lighter (a weak sensor element), over faint banding. A dark streak
    darkens paper by up to `strength`, a light one lifts ink toward white by up to `strength`."""
    vertical = rng.random() < 0.5
    length = page.shape[1] if vertical else page.shape[0]
    banding = cv2.GaussianBlur(rng.standard_normal((1, length), dtype=np.float32), (0, 0), 3.0,
                               borderType=cv2.BORDER_REFLECT)[0]
    profile = 0.15 * banding / max(float(np.abs(banding).max()), 1e-6)
    for _ in range(rng.integers(1, 6)):
        start, width = rng.integers(0, length), rng.integers(1, 4)
        sign = -1.0 if rng.random() < 0.25 else 1.0
        profile[start:start + width] = sign * rng.uniform(0.4, 1.0)
    profile = profile[None, :] if vertical else profile[:, None]
    dark = np.float32(strength) * np.clip(profile, 0.0, 1.0)
    light = np.float32(strength) * np.clip(-profile, 0.0, 1.0)
    return _finish(page * (1 - dark) + light * (1 - page))


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian": gaussian,
    "mask": mask,
    "saltpepper": saltpepper,
    "blur": blur,
    "jpeg": jpeg,
    "illumination": illumination,
    "texture": texture,
    "stains": stains,
    "ink": ink,
    "speckle": speckle,
    "scanlines": scanlines,
    "faint": faint,
}

DEFAULT_STRENGTH: dict[str, float] = {
    "gaussian": 0.1,
    "mask": 0.25,
    "saltpepper": 0.05,
    "blur": 1.0,
    "jpeg": 0.5,
    "illumination": 0.4,
    "texture": 0.15,
    "stains": 0.35,
    "ink": 0.4,
    "speckle": 0.3,
    "scanlines": 0.15,
    "faint": 1.0,
}

# The document degradations in the order they happen to a real page: the printed ink wears, the paper ages
# and gets stained and dusty, the scanner lights it unevenly, blurs it, adds streaks and sensor noise, and the
# file is saved as JPEG.
DOCUMENT_ORDER = ("ink", "texture", "stains", "speckle", "illumination", "blur", "scanlines", "gaussian", "jpeg")


# Recipe steps that are not fixed corruptions: "random" draws a fresh `random_recipe` for every page, its
# strength scaling the defaults; "transfer" lays a real noise layer from a NoiseBank over the page, its
# strength blending between the clean page (0) and the full real noise (1).
SPECIAL_STEPS = {"random": 1.0, "transfer": 1.0}


# Every step a recipe may name; "transfer" takes real noise from the training pairs.
NOISE_NAMES = (*CORRUPTIONS, *SPECIAL_STEPS)


def _known() -> str:
    return ", ".join(NOISE_NAMES)


def parse_recipe(specs: list[str]) -> list[tuple[str, float]]:
    """Parse "name" or "name:strength" specs (e.g. from the command line) into a recipe for `corrupt`; a
    missing strength takes DEFAULT_STRENGTH. Raises ValueError with a one-line message."""
    recipe = []
    for spec in specs:
        name, has_value, value = spec.partition(":")
        name = name.strip()
        if name not in CORRUPTIONS and name not in SPECIAL_STEPS:
            raise ValueError(f"unknown corruption {name!r} in {spec!r}; known: {_known()}")
        if not has_value:
            recipe.append((name, DEFAULT_STRENGTH.get(name) or SPECIAL_STEPS[name]))
            continue
        try:
            strength = float(value)
        except ValueError:
            strength = math.nan
        if not math.isfinite(strength) or strength < 0:
            raise ValueError(f"bad strength {value.strip()!r} in {spec!r}: expected a number >= 0 "
                             f"(as in name:0.1; known: {_known()})")
        recipe.append((name, strength))
    return recipe


def corrupt(page: np.ndarray, recipe: list[tuple[str, float]], rng: np.random.Generator) -> np.ndarray:
    """Apply the recipe's corruptions in order to a copy of the page."""
    out = np.array(page, dtype=np.float32)
    for name, strength in recipe:
        if name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; known: {_known()}")
        out = CORRUPTIONS[name](out, strength, rng)
    return out


def random_recipe(rng: np.random.Generator, strength_scale: float = 1.0) -> list[tuple[str, float]]:
    """A plausible random document degradation: 2 to 5 of the document corruptions (sensor noise included), in
    DOCUMENT_ORDER, each with a strength between 20% and 100% of its default × `strength_scale` (a floor, so
    that no step is a no-op)."""
    chosen = set(rng.choice(len(DOCUMENT_ORDER), size=int(rng.integers(2, 6)), replace=False).tolist())
    return [(name, float(rng.uniform(0.2, 1.0) * DEFAULT_STRENGTH[name] * strength_scale))
            for i, name in enumerate(DOCUMENT_ORDER) if i in chosen]


class NoiseBank:
    """Real degradation, transferred: the backgrounds of real dirty scans (stains, grain, shading, without
    their text) laid over other clean pages, with the multiplicative model dirty = clean × layer, so ink stays
    dark and paper takes the stain.

    `layers` are uint8 H×W images (255 is untouched paper), to keep full pages small in memory.
    """

    def __init__(self, layers: list[np.ndarray]):
        if not layers:
            raise ValueError("a NoiseBank needs at least one noise layer")
        self.layers = layers

    @classmethod
    def from_pairs(cls, pages: list[tuple[np.ndarray, np.ndarray]], threshold: float = 0.9) -> NoiseBank:
        """One layer per (dirty, clean) pair: dirty / clean where the clean page is paper (clean >=
        `threshold`, dividing so that not-quite-white paper is no stain), inpainted from the surrounding
        paper where it has ink (and INK_MARGIN px around it)."""
        layers = []
        for i, (dirty, clean) in enumerate(pages):
            if dirty.shape != clean.shape:
                raise ValueError(f"pair {i}: dirty page {dirty.shape} and clean page {clean.shape} differ in size")
            ink_mask = cv2.dilate((clean < threshold).astype(np.uint8), _disk(2 * INK_MARGIN + 1))
            if ink_mask.all():
                raise ValueError(f"pair {i}: the clean page has no paper (pixels >= {threshold}) to take noise from")
            layer = np.clip(dirty / np.maximum(clean, threshold), 0.0, 1.0)
            layer = np.rint(layer * 255).astype(np.uint8)
            layers.append(cv2.inpaint(layer, ink_mask, INPAINT_RADIUS, cv2.INPAINT_TELEA))
        return cls(layers)

    def apply(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Composite a random layer, randomly flipped, scaled by 0.8 to 1.25 and offset (tiled by reflection
        where it is smaller than the page), onto a clean page."""
        layer = self.layers[rng.integers(len(self.layers))]
        if rng.random() < 0.5:
            layer = layer[::-1]
        if rng.random() < 0.5:
            layer = layer[:, ::-1]
        scale = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
        size = (max(1, round(layer.shape[1] * scale)), max(1, round(layer.shape[0] * scale)))
        layer = cv2.resize(np.ascontiguousarray(layer), size, interpolation=cv2.INTER_LINEAR)
        h, w = clean.shape
        # Where the layer is smaller than the page, pad it by a page size of reflections, so any phase fits.
        layer = np.pad(layer, ((0, h if layer.shape[0] < h else 0), (0, w if layer.shape[1] < w else 0)),
                       mode="symmetric")
        y, x = rng.integers(layer.shape[0] - h + 1), rng.integers(layer.shape[1] - w + 1)
        return _finish(clean * (layer[y:y + h, x:x + w].astype(np.float32) / np.float32(255)))


@dataclass(frozen=True)
class Corruptor:
    """A parsed recipe as a function (clean page, rng) -> dirty page, special steps included. A class, not a
    closure, so that it travels to the processes that cut training patches."""

    recipe: list[tuple[str, float]]
    bank: NoiseBank | None = None

    def __call__(self, page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = np.array(page, dtype=np.float32)
        for name, strength in self.recipe:
            if name == "random":
                out = corrupt(out, random_recipe(rng, strength), rng)
            elif name == "transfer":
                out = _finish(out - strength * (out - self.bank.apply(out, rng)))
            else:
                out = CORRUPTIONS[name](out, strength, rng)
        return out


def make_corruptor(recipe: list[tuple[str, float]], bank: NoiseBank | None = None) -> Corruptor:
    """The corruption process of a parsed recipe."""
    if any(name == "transfer" for name, _ in recipe) and bank is None:
        raise ValueError("the 'transfer' step needs real (dirty, clean) pairs to take noise layers from")
    return Corruptor(recipe, bank)
