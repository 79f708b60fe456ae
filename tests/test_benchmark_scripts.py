"""The benchmark scripts still run end to end (smoke sizes) and print their tables: numbers in
benchmarks/README.md must stay reproducible by the scripts on main."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # whole benchmark scripts (minutes on 2 cores)

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, *args: str, timeout: int = 300) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_offload_benchmark_smoke(tmp_path):
    stdout = _run("offload.py", "--quick", "--histories", "2048", "--steps", "3", "--out", str(tmp_path / "o.json"))
    for method in ("mosaic", "mosaic-nopf", "mosaic-join0.3", "frame", "token"):
        assert f"| {method} |" in stdout
    assert "token ops / mosaic ops" in stdout and (tmp_path / "o.json").stat().st_size > 0


@pytest.mark.timeout(600)
def test_retrieval_quality_benchmark_smoke(tmp_path):
    stdout = _run("retrieval_quality.py", "--quick", "--skip-real", "--out", str(tmp_path / "q.json"), timeout=600)
    assert "mosaic" in stdout and (tmp_path / "q.json").stat().st_size > 0


@pytest.mark.timeout(600)
def test_soak_smoke():
    stdout = _run("soak.py", "--minutes", "0.5", "--sessions", "2", "--chunks-per-session", "2", timeout=600)
    assert "| 1 |" in stdout and "live requests" in stdout and "flat:" in stdout, stdout[-2000:]
