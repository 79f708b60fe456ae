#!/usr/bin/env bash
# Idempotent set-up of the CPU development environment in ./.venv (or $MOSAIC_VENV):
# torch 2.13 CPU, sglang==0.5.23 without its CUDA dependency set (flashinfer-python==0.7.2 beside it in
# .venv/flashinfer-api, for the symbol test only), the runtime list SGLang needs on
# CPU, this project (editable), the two CPU shims, and the embedded tiny models (built offline).
# Re-running skips the pip work when requirements/ and pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${MOSAIC_VENV:-.venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
  python3 -m venv "$VENV"
fi
# pip, quietly: a failed install prints everything; a successful one drops the resolver's list of
# sglang's and flashinfer's CUDA-only requirements (expected here: both are installed --no-deps, and
# sglang's CPU runtime list is installed instead) and says so in one line.
pip_install() {
  local log
  log="$(mktemp)"
  if ! "$PY" -m pip install -q "$@" >"$log" 2>&1; then
    cat "$log"; rm -f "$log"; return 1
  fi
  if grep -q "dependency resolver does not currently take into account" "$log"; then
    echo "[setup] note: pip reports sglang's and flashinfer's CUDA-only requirements as missing or conflicting; expected on CPU"
  fi
  grep -v -e "^WARNING: Location '" -e "dependency resolver does not currently" \
       -e "^sglang .* requires " -e "^flashinfer-python .* requires " -e "^[A-Za-z0-9_.-]* [0-9][^ ]* requires .*, but you have " "$log" || true
  rm -f "$log"
}

stamp="$VENV/.mosaic-setup-$(cat requirements/*.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing into $VENV (about 2-4 minutes on a fresh machine)"
  pip_install --upgrade pip
  pip_install -c requirements/constraints-cpu.txt torch==2.13.0
  pip_install --no-deps -r requirements/cpu-no-deps.txt
  rm -rf "$VENV/flashinfer-api"
  pip_install --no-deps --target "$VENV/flashinfer-api" -r requirements/flashinfer-api.txt
  pip_install -c requirements/constraints-cpu.txt -r requirements/sglang-cpu-runtime.txt -r requirements/dev.txt
  # the project's own editable build: setuptools' packaging advice is for maintainers; shown on failure
  log="$(mktemp)"; "$PY" -m pip install -q --no-deps -e . >"$log" 2>&1 || { cat "$log"; exit 1; }; rm -f "$log"
  "$PY" -m mosaic_sglang.integration.cpu_compat install
  rm -f "$VENV"/.mosaic-setup-*
  touch "$stamp"
fi
"$PY" -m mosaic_sglang.testing.tiny_models >/dev/null
echo "[setup] ready: $VENV"
