#!/usr/bin/env bash
# The whole test suite (CPU). GPU-only tests skip themselves where CUDA is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_cpu_env.sh
exec "${MOSAIC_VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider --timeout=900 "$@"
