#!/usr/bin/env bash
# Main job: a live video stream with questions between chunks, through an SGLang server with --enable-mosaic (CPU, tiny model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_cpu_env.sh
exec "${MOSAIC_VENV:-.venv}/bin/python" examples/stream_demo.py "$@"
