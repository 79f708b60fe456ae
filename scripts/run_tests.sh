#!/usr/bin/env bash
# The whole test suite (CPU). GPU-only tests skip themselves where CUDA is absent.
# Two pytest processes: the main suite, then the Triton kernels against their torch twins under the
# interpreter (TRITON_INTERPRET is read when @triton.jit runs, so it needs a process of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_cpu_env.sh
PY="${MOSAIC_VENV:-.venv}/bin/python"
"$PY" -m pytest -q -p no:cacheprovider --timeout=900 --durations=25 --ignore=tests/kernels "$@"
TRITON_INTERPRET=1 "$PY" -m pytest -q -p no:cacheprovider --timeout=600 tests/kernels
