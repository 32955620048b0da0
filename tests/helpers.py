"""Helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from cleandoc.cli import app


def cli(*args):
    """Invoke the app in-process; an exception other than the exit itself fails the test with its traceback."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "Traceback" not in result.output
    return result


def page_pixels(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A page-like 8-bit image: light uneven paper with a few dark strokes."""
    rng = np.random.default_rng(seed)
    paper = np.linspace(200, 250, width)[None, :] + rng.normal(0, 6, (height, width))
    for _ in range(max(2, height // 12)):
        y, x = int(rng.integers(0, height - 3)), int(rng.integers(0, max(1, width - 12)))
        paper[y:y + 2, x:x + int(rng.integers(4, 12))] = 30
    return np.clip(paper, 0, 255).astype(np.uint8)


def write_image(path: Path, pixels: np.ndarray, params: tuple[int, ...] = ()) -> Path:
    ok, encoded = cv2.imencode(path.suffix.lower(), pixels, list(params))
    assert ok, path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded.tobytes())
    return path


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def console_script() -> str:
    candidate = Path(sys.executable).with_name("cleandoc")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("cleandoc")
    assert found, "the cleandoc console script is not installed: pip install -e . first"
    return found

