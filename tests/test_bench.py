"""The benchmark script keeps working: it prints its table for any model, with or without the shared data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_prints_a_table_without_shared_data(tiny_model_path, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench.py"), "--model", str(tiny_model_path), "--data",
         str(tmp_path / "absent"), "--repeats", "1", "--synth", "1", "--dpi", "50"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "quality skipped" in result.stdout
    assert "| figure | do nothing | cleandoc |" in result.stdout
    assert "synthetic A4 pages at 50 dpi" in result.stdout and "CPU s per A4 300-dpi page" in result.stdout
