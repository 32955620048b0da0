"""Where the benchmark scripts write their tables: each owns a marked section of a Markdown file (docs/benchmarks.md),
replaced whole on every run and stamped with what the figures depend on."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def stamp() -> str:
    """Commit (with + when the working tree differs from it), date, CPU, cores and torch version."""
    commit = _git("rev-parse", "--short", "HEAD") or "no commit"
    dirty = "+" if _git("status", "--porcelain", "--untracked-files=no") else ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"commit {commit}{dirty}, {datetime.date.today().isoformat()}, {cpu_name()}, {cores} cores, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def replace_section(path: Path, name: str, text: str) -> None:
    """Put `text` between the `<!-- begin NAME -->` and `<!-- end NAME -->` lines of the file (appended at its end
    the first time), leaving the rest of the file as it was."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    content = path.read_text() if path.exists() else ""
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in content and end in content:
        before, rest = content.split(begin, 1)
        _, after = rest.split(end, 1)
        content = before + block + after
    else:
        content = content.rstrip("\n") + ("\n\n" if content else "") + block + "\n"
    path.write_text(content)
