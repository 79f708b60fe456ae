"""Kernel tests: Triton kernels against their pure-torch twins. Run in their own process, because
``TRITON_INTERPRET`` is read when ``@triton.jit`` runs (scripts/run_tests.sh does this):

    TRITON_INTERPRET=1 .venv/bin/python -m pytest tests/kernels

Without CUDA and without the interpreter flag, the Triton cases skip (the main pytest run ignores this
folder)."""

from __future__ import annotations

import pytest
import torch

from kernel_support import INTERPRET


def pytest_collection_modifyitems(config, items):
    if INTERPRET or torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="Triton kernels need CUDA or TRITON_INTERPRET=1 (set by scripts/run_tests.sh)")
    for item in items:
        item.add_marker(skip)
