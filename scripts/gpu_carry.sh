#!/usr/bin/env bash
# Copy pytest and its pure-Python dependencies from the project's venv into .gpu_carry/site (git-ignored),
# for a GPU machine that has torch + Triton but no package registry (scripts/gpu_checks.py puts it on the path).
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf .gpu_carry && mkdir -p .gpu_carry/site
for name in pytest _pytest pluggy iniconfig packaging py.py pytest_timeout.py; do
  if [ -e "$site/$name" ]; then cp -r "$site/$name" .gpu_carry/site/; fi
done
# the plugin's entry point (pytest-timeout reads the project's `timeout_method`) lives in its dist-info
cp -r "$site"/pytest-*.dist-info "$site"/pytest_timeout-*.dist-info "$site"/pluggy-*.dist-info .gpu_carry/site/
find .gpu_carry -name __pycache__ -prune -exec rm -rf {} +
du -sh .gpu_carry
