"""`benchmarks/gpu_decode_step.py` runs end to end at smoke size (CPU: under the Triton interpreter), so
the script a GPU session brings is known to work before the device time starts. Its numbers here are
not GPU numbers and are not checked; its correctness check (every variant's layer 0 against an fp32
reference over the same lists) is."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_decode_step.py"


def test_every_variant_runs_and_matches_the_reference():
    spec = importlib.util.spec_from_file_location("gpu_decode_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--quick"])
    assert [r["variant"] for r in rows] == ["dense_sdpa", "dense_k5", "mosaic_keep", "mosaic_reselect", "token_topk"]
    assert all(r["err"] < 1e-2 and r["ms"] > 0 for r in rows), rows
    dense, keep = rows[1]["gb"], rows[2]["gb"]
    assert keep < dense  # the kept selection reads fewer K/V rows than the whole context
