"""Kernels of mosaic-sglang (installed as ``mosaic_sglang.kernels``).

Each op lives in ``<op>/`` with a pure-torch ``reference.py`` (obviously right, fp32 accumulation) and,
where it pays, a Triton ``triton.py``; ``<op>/__init__.py`` dispatches on the tensors' device (Triton
for CUDA tensors, or when asked, as the interpreter tests do). Ops: `attended_attention` (extend and
decode over per-request attended lists, position-causal; the CPU serving path), `sparse_decode`
(split-K decode attention over a CSR of slots with a log-sum-exp merge), `exact_fill` (sort-free exact
budget fill: tokens per cluster). Nothing here imports SGLang.
"""

from .attended_attention import attended_attention
from .exact_fill import exact_fill
from .sparse_decode import sparse_decode

__all__ = ["attended_attention", "exact_fill", "sparse_decode"]
