"""The README's promises: CI runs its test command, its Python example works, the Dockerfile is sound."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    first = [line for line in readme_blocks("bash")[0].splitlines() if line and not line.startswith("#")]
    assert len(first) == 2
    install_and_clean, install_and_test = first
    assert "pip install torch==2.13.0" in install_and_clean and "cleandoc clean samples/noisy" in install_and_clean
    assert "pytest" in install_and_test
    assert install_and_test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_python_example_runs(tmp_path, monkeypatch):
    (example,) = readme_blocks("python")
    import img2pdf

    shutil.copy(ROOT / "samples" / "real" / "huckleberry-finn-p22.jpg", tmp_path / "scan.jpg")
    (tmp_path / "book.pdf").write_bytes(img2pdf.convert([(tmp_path / "scan.jpg").read_bytes()] * 2))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "README.md", "exec"), namespace)
    from cleandoc.imageio import read_gray

    written = read_gray(tmp_path / "scan-clean.png")
    assert written.shape == namespace["clean_page"].shape == read_gray(tmp_path / "scan.jpg").shape
    assert abs(written.astype(int) - namespace["clean_page"]).mean() < 1  # the same page, by either door
    import pypdfium2 as pdfium

    assert len(pdfium.PdfDocument(str(tmp_path / "book-clean.pdf"))) == 2
    assert len(README.splitlines()) <= 180


def test_dockerfile_takes_its_base_from_an_argument_and_installs_into_a_venv():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=\S+\nFROM \$\{BASE\}$", dockerfile, flags=re.M)
    assert "python3 -m venv" in dockerfile
    assert 'ENTRYPOINT ["cleandoc"]' in dockerfile
    assert "COPY models" in dockerfile  # the image carries the shipped model


def test_dockerfile_passes_hadolint():
    assert shutil.which("hadolint"), "hadolint is a test dependency: pip install -e '.[test]'"
    result = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
