"""Kernels of mosaic-sglang (installed as ``mosaic_sglang.kernels``).

Each op lives in ``<op>/`` with a pure-torch ``reference.py`` (obviously right, fp32 accumulation) and,
where it pays, a Triton ``triton.py``; ``<op>/__init__.py`` dispatches on the tensors' device (Triton
for CUDA tensors, or when asked, as the interpreter tests do). Ops, in data-path order:

- `cluster_scoring` (K1): a priority per (row, cluster) from queries and cluster summaries, GQA-aggregated;
- `exact_fill` (K2): sort-free exact budget fill, tokens per cluster;
- `emit_members` (K3): the chosen clusters' eligible members (positions or KV slots) into a flat CSR;
- `assemble_always` (K4): the always-attended part (sinks, text, window, the not-yet-indexed tail) from
  a few ranges per request;
- `sparse_decode` (K5): split-K decode attention over a CSR of slots with a log-sum-exp merge;
- `sparse_extend`: a prefill chunk over its selected prefix slots plus itself, causally (SGLang's own
  Triton ``extend_attention_fwd``, imported only when called);
- `attended_attention`: extend and decode over per-request attended lists, position-causal (the CPU
  serving path);
- `assign_tokens` (K6): each new token's nearest candidate cluster that admits it (the join round's
  core; ``admit_by_capacity`` applies the size cap);
- `extent_copy` (K7): pool⇄staging copies of the same slots of every layer, K and V, in one launch.

Nothing here imports SGLang at import time.
"""

from .assemble_always import assemble_always
from .assign_tokens import assign_tokens
from .attended_attention import attended_attention
from .cluster_scoring import cluster_scores
from .emit_members import emit_members
from .exact_fill import exact_fill
from .extent_copy import gather_slots, scatter_slots
from .sparse_decode import sparse_decode
from .sparse_extend import sparse_extend

__all__ = [
    "assemble_always", "assign_tokens", "attended_attention", "cluster_scores", "emit_members", "exact_fill", "gather_slots",
    "scatter_slots", "sparse_decode", "sparse_extend",
]
