"""The README's before-and-after picture: a real scanned book page with an illustration, a NoisyOffice page and a
page with faint ink, each beside what the shipped model makes of it.

    python bench/readme_picture.py [--model default] [--output docs/samples.png] [--height 420]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from cleandoc.api import Cleaner
from cleandoc.imageio import read_gray, to_uint8, write_atomically
from cleandoc.noise import faint_ink
from cleandoc.synth import render_page

ROOT = Path(__file__).resolve().parents[1]


def panel(page: np.ndarray, height: int, title: str) -> np.ndarray:
    width = max(1, round(page.shape[1] * height / page.shape[0]))
    gray = cv2.resize(page, (width, height), interpolation=cv2.INTER_AREA)
    picture = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    cv2.rectangle(picture, (0, 0), (width, 24), (255, 255, 255), -1)
    cv2.putText(picture, title, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 160), 1, cv2.LINE_AA)
    return cv2.copyMakeBorder(picture, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=(128, 128, 128))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "samples.png")
    parser.add_argument("--height", type=int, default=420)
    args = parser.parse_args()
    cleaner = Cleaner.load(args.model)
    real = read_gray(ROOT / "samples" / "real" / "huckleberry-finn-p22.jpg")
    office = read_gray(ROOT / "samples" / "noisy" / "page-2.png")
    clean = render_page(np.random.default_rng(11), 150, (105, 148))[:600, :600]
    faint = to_uint8(faint_ink(clean, 0.3, np.random.default_rng(11)))
    rows = [[panel(real, args.height, "real scan (public domain)"), panel(cleaner.clean(real), args.height, "cleaned")],
            [panel(office, args.height // 2, "NoisyOffice page"),
             panel(cleaner.clean(office), args.height // 2, "cleaned"),
             panel(faint, args.height // 2, "faint ink (contrast 0.3)"),
             panel(cleaner.clean(faint), args.height // 2, "cleaned")]]
    lines = [cv2.hconcat(row) for row in rows]
    width = max(line.shape[1] for line in lines)
    lines = [cv2.copyMakeBorder(line, 0, 0, 0, width - line.shape[1], cv2.BORDER_CONSTANT, value=(255, 255, 255))
             for line in lines]
    ok, encoded = cv2.imencode(".png", cv2.vconcat(lines))
    if not ok:
        raise SystemExit("could not encode the picture")
    write_atomically(args.output, encoded.tobytes())
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
