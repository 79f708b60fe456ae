"""`ForwardPlan`: what every layer of one forward attends, planned once on the host before layer 0.

FlashInfer's plan/run split applied to retrieval. Per request ``b`` the attended list of a layer is
``[always part ‖ selected part]`` (no position twice; order within a list is free):

* ``a_b`` always-attended positions — sinks, text, the recent window and every position the index does
  not cover (the forward's own tokens, anything not indexed yet); the same at every layer;
* ``f_b`` selected positions — members of the chosen clusters, ``f_b = min(budget, eligible)`` with the
  exact fill, so every layer has the same length ``n_b = a_b + f_b`` and one ``kv_indptr`` serves all
  layers. A dense request (text only, or prefill with ``select_in_prefill=False``) has ``f_b = 0``
  and ``a_b = seq_len``.

The always parts, and the selected parts the plan already knows (a decode step keeping its
question's selection), are written into ``kv_positions [L, nnz]`` at plan time, so such a layer needs
no work at all: `layer_kv` is a view. Requests whose selection is due at this forward (prefill
chunks, re-select steps) get their selected part written by the policy when the layer's queries exist.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import torch

from ..csr import indptr_from_counts

__all__ = ["ForwardPlan", "LayerKV", "build_plan"]


class LayerKV(NamedTuple):
    """One layer's attended lists, CSR over the forward's requests.

    Attributes:
        kv_indptr: ``[B + 1] int64``; request ``b`` attends ``kv_positions[kv_indptr[b]:kv_indptr[b+1]]``.
        kv_positions: ``[nnz] int64`` positions in the request's sequence.
    """

    kv_indptr: torch.Tensor
    kv_positions: torch.Tensor


class ForwardPlan(NamedTuple):
    """The plan of one forward over ``B`` requests and ``L`` layers (all tensors on the host: the
    backend moves what it needs to the model's device once per forward).

    Attributes:
        q_indptr: ``[B + 1] int64``; request ``b``'s queries are ``q[q_indptr[b]:q_indptr[b+1]]``.
        q_positions: ``[nq] int64`` position of each query token in its sequence.
        kv_indptr: ``[B + 1] int64`` shared by every layer (lengths ``n_b = a_b + f_b``).
        kv_positions: ``[L, nnz] int64`` per-layer lists; the selected parts of ``select_due`` requests
            are filled by the policy at that layer (until then they hold ``-1``).
        kv_request: ``[nnz] int64`` request of each entry (the same at every layer).
        always_len: ``[B] int64`` ``a_b``.
        select_due: requests whose selected part is chosen at each layer of this forward (host ints).
        max_q: longest query segment; max_kv: longest attended list (host ints, for padded kernels).
        padded: some lists may end in ``-1`` padding (``fill='whole'`` selects up to ``f_b`` tokens, not
            exactly ``f_b``); `layer` then drops it (a host sync; never with the exact fill).
    """

    q_indptr: torch.Tensor
    q_positions: torch.Tensor
    kv_indptr: torch.Tensor
    kv_positions: torch.Tensor
    kv_request: torch.Tensor
    always_len: torch.Tensor
    select_due: tuple
    max_q: int
    max_kv: int
    padded: bool = False

    def layer(self, layer: int) -> LayerKV:
        """Layer ``layer``'s lists (a view of the plan's buffer unless padded)."""
        positions = self.kv_positions[layer]
        if not self.padded:
            return LayerKV(self.kv_indptr, positions)
        keep = positions >= 0
        counts = torch.zeros(self.kv_indptr.numel() - 1, dtype=torch.int64).index_add_(0, self.kv_request, keep.long())
        return LayerKV(indptr_from_counts(counts), positions[keep])

    def prefix_entries(self, kv: Optional[LayerKV] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The list entries that are cached-prefix positions, CSR over requests (what a kernel that reads
        the forward's own tokens from its K/V, like SGLang's extend attention, takes as the prefix).

        Every list ends its always part with the forward's own positions (``q_positions`` of the request,
        checked here on the host), so the prefix is the rest: ``[start, start + a_b - q_b) ∪ [start + a_b,
        end)``. ``kv``: a layer's compacted lists (``padded``, from `layer`); default layer 0's (every layer
        shares the always part).

        Returns:
            ``(prefix_indptr [B + 1] int64, entries [nnz_prefix] int64)`` indices into the layer's list.
        """
        kv_indptr, positions = (self.kv_indptr, self.kv_positions[0]) if kv is None else kv
        q_lens = self.q_indptr[1:] - self.q_indptr[:-1]  # [B]
        own_start = kv_indptr[:-1] + self.always_len - q_lens  # [B]
        own = torch.repeat_interleave(own_start - self.q_indptr[:-1], q_lens) + torch.arange(int(self.q_indptr[-1]))
        assert torch.equal(positions[own], self.q_positions), "the always part must end with the queries"
        keep = torch.ones(int(kv_indptr[-1]), dtype=torch.bool)
        keep[own] = False
        return indptr_from_counts((kv_indptr[1:] - kv_indptr[:-1]) - q_lens), keep.nonzero().flatten()

    def selected_span(self, request: int) -> tuple[int, int]:
        """``[start, end)`` of request ``request``'s selected part in every layer's list."""
        start = int(self.kv_indptr[request]) + int(self.always_len[request])
        return start, int(self.kv_indptr[request + 1])


def build_plan(
    num_layers: int,
    extend: Sequence[tuple[int, int]],
    always: Sequence[torch.Tensor],
    selected: Sequence[Optional[Sequence[torch.Tensor]]],
    num_selected: Sequence[int],
    *,
    padded: bool = False,
) -> ForwardPlan:
    """Lay out a forward's lists.

    Args:
        num_layers: ``L``.
        extend: per request ``(prefix_len, seq_len)``: its queries are positions ``prefix_len .. seq_len - 1``.
        always: per request ``[a_b] int64`` always-attended positions.
        selected: per request ``L`` tensors ``[f_b]`` of selected positions already known (kept from an
            earlier step), or None when the selection is due at this forward (written later).
        num_selected: per request ``f_b``.
        padded: lists may hold fewer than ``f_b`` selected positions (``fill='whole'``): the rest is ``-1``.
    """
    batch = len(extend)
    q_lens = torch.tensor([end - start for start, end in extend], dtype=torch.int64)
    q_positions = torch.cat([torch.arange(start, end) for start, end in extend]) if batch else torch.empty(0, dtype=torch.int64)
    a = torch.tensor([t.numel() for t in always], dtype=torch.int64)
    f = torch.tensor(list(num_selected), dtype=torch.int64)
    kv_indptr = indptr_from_counts(a + f)
    nnz = int(kv_indptr[-1])
    kv_positions = torch.full((num_layers, nnz), -1, dtype=torch.int64)
    due = []
    for b in range(batch):
        start = int(kv_indptr[b])
        kv_positions[:, start : start + always[b].numel()] = always[b]
        if selected[b] is None:
            if num_selected[b]:
                due.append(b)
            continue
        for layer, positions in enumerate(selected[b]):
            ok = positions.numel() <= num_selected[b] if padded else positions.numel() == num_selected[b]
            assert ok, f"request {b} layer {layer}: {positions.numel()=} {num_selected[b]=}"
            first = start + always[b].numel()
            kv_positions[layer, first : first + positions.numel()] = positions
    kv_request = torch.repeat_interleave(torch.arange(batch), a + f)
    return ForwardPlan(
        indptr_from_counts(q_lens), q_positions, kv_indptr, kv_positions, kv_request, a, tuple(due),
        int(q_lens.max()) if batch else 0, int((a + f).max()) if batch else 0, padded,
    )
