"""K6, token-to-centroid assignment: the computational core of one `ClusterIndex._join` round — every
token's nearest candidate cluster that admits it (cohesive after the join, under the size cap). The
maths: ``mosaic_sglang/clusters/README.md`` ("Cohesion-aware assignment").

`assign_tokens` dispatches: the Triton kernel (`triton.py`) for CUDA tensors or with ``impl='triton'``
(interpreter tests), the pure-torch reference (`reference.py`) otherwise. The round's capacity cut (per
cluster only its ``max_cluster_size − size`` nearest joiners) stays in torch: `admit_by_capacity`.
"""

from __future__ import annotations

from .reference import Assignment, admit_by_capacity, assign_tokens_reference

__all__ = ["Assignment", "admit_by_capacity", "assign_tokens", "assign_tokens_reference"]


def assign_tokens(x, centroids, spread, size, *, num_pairs: int, join_threshold: float, max_cluster_size: int,
                  out=None, impl: str | None = None) -> Assignment:
    """See `assign_tokens_reference` (``x [n, F]`` / ``[G, n, F]``, ``centroids [A, F]`` / ``[G, A, F]``,
    ``spread`` and ``size [A]`` / ``[G, A]``, optional ``out = (best int64, d2 float32)``); ``impl``: None
    (by device), 'triton' or 'reference'."""
    impl = impl or ("triton" if x.is_cuda else "reference")
    kwargs = dict(num_pairs=num_pairs, join_threshold=join_threshold, max_cluster_size=max_cluster_size, out=out)
    if impl == "triton":
        from .triton import assign_tokens_triton  # imports triton: only when used

        return assign_tokens_triton(x, centroids, spread, size, **kwargs)
    if impl != "reference":
        raise ValueError(f"assign_tokens: impl: expected None, 'triton' or 'reference', got {impl!r}")
    return assign_tokens_reference(x, centroids, spread, size, **kwargs)
