"""The device checks in one short run, for a GPU machine that has torch + Triton but no SGLang, no
FlashInfer and no package registry (the checkout is used in place; pytest travels in ``.gpu_carry``).

What it runs, each step's output saved under ``--out`` (default ``$OUT`` or ``gpu_checks_out``):

1. ``machine.txt``: the card's name, CUDA / torch / Triton versions;
2. ``kernel_tests.txt``: ``pytest tests/kernels`` compiled for the GPU (no ``TRITON_INTERPRET``): every
   Triton kernel against its torch reference in fp32 / fp16 / bf16, and the serving selection path on
   CUDA (`tests/kernels/test_device_selection.py`, including re-selecting decode layers, shared and per KV
   head, under ``torch.cuda.set_sync_debug_mode('error')``: no synchronisation the CPU guard cannot see);
   SGLang-only cases skip. Skipped (saying so) when pytest cannot be imported;
3. ``gpu_suite.txt`` and ``gpu_suite/``: ``bash benchmarks/gpu_suite.sh``, which supersedes the benchmark
   step this runner used to have: the pytest-free kernel check, the copy ceilings and the decode-step
   table (``gpu_suite/results.json``). A GPU box without pytest needs only the suite.

    bash scripts/gpu_carry.sh                          # here: pytest and its pure-Python deps into .gpu_carry
    python scripts/gpu_checks.py                       # there (the device tool's `run`, carry .gpu_carry)
    TRITON_INTERPRET=1 .venv/bin/python scripts/gpu_checks.py --quick   # CPU smoke run of the runner itself

Never report a number from ``--quick`` or from a machine without CUDA as a GPU number.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict:
    """The child processes' environment: the carried pytest and the checkout on the path (the kernel
    package is mapped by ``tests/kernels`` and ``benchmarks`` themselves when the project is not
    installed); the suite runs under this interpreter."""
    env = dict(os.environ)
    paths = [str(ROOT / ".gpu_carry" / "site"), str(ROOT), str(ROOT / "benchmarks")]
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHON"] = sys.executable  # benchmarks/gpu_suite.sh: this interpreter
    return env


def _run(name: str, argv: list, out: Path, timeout: int) -> int:
    start = time.time()
    with open(out / f"{name}.txt", "w") as log:
        try:
            rc = subprocess.run(argv, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    print(f"{name}: rc={rc} in {time.time() - start:.0f} s -> {out / (name + '.txt')}", flush=True)
    return rc


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT", "gpu_checks_out"))
    p.add_argument("--quick", action="store_true", help="small subset (CPU smoke run of this runner)")
    p.add_argument("--tests-timeout", type=int, default=240)
    p.add_argument("--suite-timeout", type=int, default=540, help="benchmarks/gpu_suite.sh: < 8 min on an H200")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "absent"
    cuda = torch.cuda.is_available()
    lines = [f"card: {torch.cuda.get_device_name(0) if cuda else 'none (no CUDA: nothing here is a GPU number)'}",
             f"cuda: {torch.version.cuda}", f"torch: {torch.__version__}", f"triton: {triton_version}",
             f"python: {platform.python_version()}", f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')}",
             f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}"]
    (out / "machine.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    tests = ["tests/kernels/test_device_selection.py", "tests/kernels/test_exact_fill.py"] if args.quick else ["tests/kernels"]
    # pytest in a child that first maps kernels/ to mosaic_sglang.kernels when the project is not installed
    program = ("import sys, gpu_kernels_import, pytest; gpu_kernels_import.load_kernels(); "
               f"sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', '-rs', *{tests!r}]))")
    if _has_pytest():
        rc = _run("kernel_tests", [sys.executable, "-c", program], out, args.tests_timeout)
    else:
        print("kernel_tests: skipped: pytest is not importable (bash scripts/gpu_carry.sh, then carry .gpu_carry); "
              "the suite's kernel check runs without it", flush=True)
        rc = 0
    suite = ["bash", "benchmarks/gpu_suite.sh", "--out", str((out / "gpu_suite").resolve())] + \
        (["--quick"] if args.quick else [])
    rc_suite = _run("gpu_suite", suite, out, args.suite_timeout)
    return rc or rc_suite


def _has_pytest() -> bool:
    """pytest importable by the child (the carried ``.gpu_carry/site`` included)?"""
    probe = [sys.executable, "-c", "import pytest"]
    return subprocess.run(probe, cwd=ROOT, env=_env(), capture_output=True).returncode == 0


if __name__ == "__main__":
    sys.exit(main())
