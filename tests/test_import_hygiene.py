"""`import mosaic_sglang` (and its offline API) works without CUDA, Triton drivers, FlashInfer or SGLang."""

import subprocess
import sys

CODE = """
import sys
import mosaic_sglang
from mosaic_sglang import MosaicConfig, Selection, Retriever
import mosaic_sglang.kernels, mosaic_sglang.frontend, mosaic_sglang.integration
import mosaic_sglang.clusters, mosaic_sglang.retrieval, mosaic_sglang.serving, mosaic_sglang.offload
MosaicConfig(budget=8)
heavy = sorted(m for m in ("sglang", "flashinfer", "triton") if m in sys.modules)
print("HEAVY", heavy)
"""


def test_import_pulls_no_gpu_stack():
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120, env={"CUDA_VISIBLE_DEVICES": "", "PATH": ""}
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout
