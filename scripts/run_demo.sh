#!/usr/bin/env bash
# Main job: streaming multi-turn video Q&A through an SGLang server with --enable-mosaic (CPU, tiny model).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_cpu_env.sh
exec "${MOSAIC_VENV:-.venv}/bin/python" examples/video_qa_demo.py "$@"
