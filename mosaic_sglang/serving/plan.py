"""`ForwardPlan`: what every layer of one forward attends, planned once before layer 0.

FlashInfer's plan/run split applied to retrieval. Per request ``b`` the attended list of a layer is
``[always part ‖ selected part]`` (no position twice; order within a list is free):

* ``a_b`` always-attended positions — sinks, text, the recent window and every position the index does
  not cover (the forward's own tokens, anything not indexed yet); the same at every layer;
* ``f_b`` selected positions — members of the chosen clusters, ``f_b = min(budget, eligible)`` with the
  exact fill, so every layer has the same length ``n_b = a_b + f_b`` and one ``kv_indptr`` serves all
  layers. A dense request (text only, or prefill with ``select_in_prefill=False``) has ``f_b = 0``
  and ``a_b = seq_len``.

Lengths are decided on the host; the lists themselves (``kv_positions [L, nnz]``) are built on the model's
device from small descriptors: the always parts by `assemble_always` (K4) from a few ranges per
request, the selected parts a decode step keeps by one gather from the `SelectionSlab`. Such a layer
then needs no work at all: `layer` is a view. Requests whose selection is due at this forward (prefill
chunks, re-select steps) get their selected part written by the policy when the layer's queries exist.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Optional, Sequence

import torch

from mosaic_sglang.kernels.assemble_always import assemble_always, pack_ranges

from ..csr import indptr_from_counts
from ..host_ints import host_ints_to_device

if TYPE_CHECKING:
    from .selection_slab import SelectionSlab

__all__ = ["AlwaysPart", "ForwardPlan", "LayerKV", "build_plan"]


class LayerKV(NamedTuple):
    """One layer's attended lists, CSR over the forward's requests.

    Attributes:
        kv_indptr: ``[B + 1] int64``; request ``b`` attends ``kv_positions[kv_indptr[b]:kv_indptr[b+1]]``.
        kv_positions: ``[nnz] int64`` positions in the request's sequence; with per-KV-head lists
            (`ForwardPlan.heads` ``H > 1``) ``[H · nnz]``: ``H`` blocks of ``nnz``, each laid out by
            ``kv_indptr`` (`ForwardPlan.head_major` gives the indptr over all of them).
    """

    kv_indptr: torch.Tensor
    kv_positions: torch.Tensor
    kv_request: Optional[torch.Tensor] = None
    """``[nnz] int64`` list of each entry, when the layer's lists are its own (a padded plan's compacted
    layer: head-major with ``H > 1``); None: the plan's ``kv_request`` (`head_major`'s with ``H > 1``)."""


class ForwardPlan(NamedTuple):
    """The plan of one forward over ``B`` requests and ``L`` layers. Lengths and indptrs are host tensors
    (the backend moves what it needs once per forward); ``kv_positions`` and ``kv_request`` live on the
    model's device.

    Attributes:
        q_indptr: ``[B + 1] int64``; request ``b``'s queries are ``q[q_indptr[b]:q_indptr[b+1]]``.
        q_positions: ``[nq] int64`` position of each query token in its sequence.
        kv_indptr: ``[B + 1] int64`` shared by every layer (lengths ``n_b = a_b + f_b``).
        kv_positions: ``[L, nnz] int64`` (device) per-layer lists, or ``[1, nnz]`` when one list serves
            every layer; the selected parts of ``select_due`` requests are filled by the policy at that
            layer (until then they hold ``-1``).
        kv_request: ``[nnz] int64`` (device) request of each entry (the same at every layer).
        always_len: ``[B] int64`` ``a_b``.
        select_due: requests whose selected part is chosen at each layer of this forward (host ints).
        max_q: longest query segment; max_kv: longest attended list (host ints, for padded kernels).
        padded: some lists may end in ``-1`` padding (``fill='whole'`` selects up to ``f_b`` tokens, not
            exactly ``f_b``); `layer` then drops it (a host sync; never with the exact fill).
        heads: ``H`` lists per request (``selection_heads='per_kv_head'``: KV head ``h``'s lists are the
            block ``kv_positions[:, h · nnz:(h + 1) · nnz]``, each laid out by ``kv_indptr``, the always
            parts equal); 1: one list per request for every KV head. `head_major` serves either.
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
    heads: int = 1

    def layer(self, layer: int) -> LayerKV:
        """Layer ``layer``'s lists (a view of the plan's buffer unless padded; then the ``-1`` padding is
        dropped, a host sync, and the indptr is on the device). A padded plan with ``heads > 1`` gives
        them head-major, as `head_major` lays requests out: ``H · B`` lists, list ``h · B + b`` KV head
        ``h`` of request ``b`` (each head its own length: mass budgets per head)."""
        positions = self.kv_positions[layer if self.kv_positions.shape[0] > 1 else 0]
        if not self.padded:
            return LayerKV(self.kv_indptr, positions)
        keep = (positions >= 0).nonzero().flatten()  # the one host sync
        owner = _head_major_requests(self.kv_request, self.heads, self.kv_indptr.numel() - 1)[keep]
        counts = torch.zeros(self.heads * (self.kv_indptr.numel() - 1), dtype=torch.int64, device=positions.device)
        counts.index_add_(0, owner, torch.ones_like(owner))
        return LayerKV(indptr_from_counts(counts), positions[keep], owner)

    def head_major(self) -> "ForwardPlan":
        """The plan as ``H · B`` requests of one KV head each (itself when ``heads == 1``): request ``h · B +
        b`` is KV head ``h`` of request ``b``, whose queries are rows ``[h · nq + q_indptr[b], h · nq +
        q_indptr[b + 1])`` of the queries laid out head-major (``q [nq, H, G, D]`` → ``[H · nq, G, D]``)
        and whose list is its block of ``kv_positions`` (``[L, H · nnz]``, unchanged). Any attention
        kernel over a CSR of slots then serves per-head lists with KV heads viewed as slots (``k [S, H, D]``
        → ``[S · H, 1, D]``, slot ``s · H + h``). Host work of ``O(H · B)``; ``kv_request`` ``O(H · nnz)``."""
        if self.heads == 1:
            return self
        heads, batch = self.heads, self.kv_indptr.numel() - 1
        nq, nnz = int(self.q_indptr[-1]), int(self.kv_indptr[-1])

        def blocks(indptr: torch.Tensor, n: int) -> torch.Tensor:
            return torch.cat([indptr[:-1] + h * n for h in range(heads)] + [indptr.new_full((1,), heads * n)])

        return self._replace(q_indptr=blocks(self.q_indptr, nq), q_positions=self.q_positions.repeat(heads),
                             kv_indptr=blocks(self.kv_indptr, nnz),
                             kv_request=_head_major_requests(self.kv_request, heads, batch),
                             always_len=self.always_len.repeat(heads), select_due=(), heads=1)

    def head_block(self, first: int, count: int) -> "ForwardPlan":
        """The plan restricted to KV heads ``[first, first + count)``: ``count`` lists per request whose
        ``kv_positions`` are a view of those heads' blocks, so what the policy writes into the whole plan at
        a selecting layer shows here. A tensor-parallel rank attends its own heads' block of the lists every
        rank chose for all heads (itself when the block is every head)."""
        if first == 0 and count == self.heads:
            return self
        if not 0 <= first < first + count <= self.heads:
            raise ValueError(f"ForwardPlan.head_block: expected 0 <= first < first + count <= {self.heads}, got "
                             f"first={first}, count={count}")
        width = self.kv_positions.shape[1] // self.heads
        return self._replace(kv_positions=self.kv_positions[:, first * width : (first + count) * width], heads=count)

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
        prefix_indptr, entries, _, _ = self._split_entries(kv_indptr.cpu(), positions)
        return prefix_indptr, entries

    def _split_entries(self, kv_indptr: torch.Tensor, positions: torch.Tensor):
        """``(prefix_indptr, entries, q_lens, own)``: `prefix_entries` and `_own_entries` from one check."""
        q_lens, own = self._own_entries(kv_indptr, positions)
        keep = torch.ones(int(kv_indptr[-1]), dtype=torch.bool)
        keep[own] = False
        return indptr_from_counts((kv_indptr[1:] - kv_indptr[:-1]) - q_lens), keep.nonzero().flatten(), q_lens, own

    def causal_order(self) -> torch.Tensor:
        """A permutation of the list entries (the same for every layer) that lists each request's
        cached-prefix entries first and its own tokens last, in query order: what an attention kernel
        whose causal mask is aligned at the bottom right (FlashInfer's paged prefill, ``causal=True``)
        needs to equal the position-causal mask, since every prefix entry precedes every query.
        Unpadded plans only (one ``kv_indptr`` for every layer).

        Returns:
            ``[nnz] int64`` host tensor: entry ``order[j]`` of each layer's list goes to place ``j``.
        """
        assert not self.padded, "causal_order: every layer's lists must share kv_indptr"
        kv_indptr = self.kv_indptr.cpu()
        prefix_indptr, entries, q_lens, own = self._split_entries(kv_indptr, self.kv_positions[0])
        prefix_lens = prefix_indptr[1:] - prefix_indptr[:-1]
        starts = kv_indptr[:-1]
        order = torch.empty(int(kv_indptr[-1]), dtype=torch.int64)
        owner = torch.repeat_interleave(torch.arange(q_lens.numel()), prefix_lens)  # request of each prefix entry
        order[starts[owner] + torch.arange(entries.numel()) - prefix_indptr[:-1][owner]] = entries
        owner = torch.repeat_interleave(torch.arange(q_lens.numel()), q_lens)  # request of each query
        order[starts[owner] + prefix_lens[owner] + torch.arange(own.numel()) - self.q_indptr[:-1][owner]] = own
        return order

    def _own_entries(self, kv_indptr: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q_lens [B], own [nq])``: the list entries holding the forward's own tokens, in query order (each
        always part ends with them; checked here on the host)."""
        q_lens = self.q_indptr[1:] - self.q_indptr[:-1]  # [B]
        own_start = kv_indptr[:-1] + self.always_len - q_lens  # [B]
        own = torch.repeat_interleave(own_start - self.q_indptr[:-1], q_lens) + torch.arange(int(self.q_indptr[-1]))
        assert torch.equal(positions[own.to(positions.device)].cpu(), self.q_positions), \
            "the always part must end with the queries"
        return q_lens, own

    def selected_span(self, request: int) -> tuple[int, int]:
        """``[start, end)`` of request ``request``'s selected part in every layer's list."""
        start = int(self.kv_indptr[request]) + int(self.always_len[request])
        return start, int(self.kv_indptr[request + 1])


class AlwaysPart(NamedTuple):
    """A request's always-attended part, as `assemble_always` (K4) expands it: ``ranges`` (sinks, text and
    the recent window among the indexed positions, ascending, all below ``indexed_end``) then the tail
    ``[indexed_end, seq_len)`` the index does not cover. A dense request is ``AlwaysPart.dense()``.

    Attributes:
        starts, ends: ``[m] int64`` host ranges (`always_ranges`).
        indexed_end: positions the request's index covers (host int).
    """

    starts: torch.Tensor
    ends: torch.Tensor
    indexed_end: int

    @staticmethod
    def dense() -> "AlwaysPart":
        empty = torch.empty(0, dtype=torch.int64)
        return AlwaysPart(empty, empty, 0)

    def length(self, seq_len: int) -> int:
        return int((self.ends - self.starts).sum()) + seq_len - self.indexed_end


def _head_major_requests(kv_request: torch.Tensor, heads: int, batch: int) -> torch.Tensor:
    """``[H · nnz] int64``: the list of each entry of the ``H`` blocks, head-major (block ``h``'s entry of
    request ``b`` belongs to list ``h · B + b``); ``kv_request`` itself when ``H == 1``."""
    if heads == 1:
        return kv_request
    head = torch.arange(heads, device=kv_request.device).repeat_interleave(kv_request.numel())
    return kv_request.repeat(heads) + head * batch


def build_plan(
    num_layers: int,
    extend: Sequence[tuple[int, int]],
    always: Sequence[AlwaysPart],
    num_selected: Sequence[int],
    *,
    kept: Optional[Sequence[Optional[int]]] = None,
    slab: Optional["SelectionSlab"] = None,
    device: torch.device | str | None = None,
    padded: bool = False,
    heads: int = 1,
) -> ForwardPlan:
    """Lay out a forward's lists: host lengths, device lists.

    The always parts are expanded on ``device`` by `assemble_always` from their ranges, into one list that
    every layer copies; kept selections are copied from the slab with one gather (`SelectionSlab.copy_into`).
    Nothing of size ``L × nnz`` is built on the host.

    Args:
        num_layers: ``L`` (1 when one list serves every layer).
        extend: per request ``(prefix_len, seq_len)``: its queries are positions ``prefix_len .. seq_len - 1``.
        always: per request its `AlwaysPart`.
        num_selected: per request ``f_b``.
        kept: per request its slab row when its selection is kept from an earlier step, else None (the
            selection is due at this forward when ``f_b > 0``, and written at each layer).
        slab: the `SelectionSlab` ``kept`` rows refer to.
        device: where ``kv_positions`` and ``kv_request`` live (default CPU).
        padded: lists may hold fewer than ``f_b`` selected positions (``fill='whole'``, mass budgets): the
            rest is ``-1``.
        heads: lists per request (`ForwardPlan.heads`); a kept selection's slab row then holds the heads'
            parts one after another (``H · f_b`` positions per layer).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    batch = len(extend)
    kept = [None] * batch if kept is None else list(kept)
    seq_lens = [end for _, end in extend]
    q_lens = torch.tensor([end - start for start, end in extend], dtype=torch.int64)
    q_positions = torch.cat([torch.arange(start, end) for start, end in extend]) if batch else torch.empty(0, dtype=torch.int64)
    a = torch.tensor([part.length(n) for part, n in zip(always, seq_lens)], dtype=torch.int64)
    f = torch.tensor(list(num_selected), dtype=torch.int64)
    kv_indptr = indptr_from_counts(a + f)
    nnz = int(kv_indptr[-1])
    ranges = pack_ranges([(part.starts, part.ends) for part in always]).to(device)
    shared = torch.full((nnz,), -1, dtype=torch.int64, device=device)
    if batch:
        indexed_end, ends, starts = host_ints_to_device(
            [[p.indexed_end for p in always], seq_lens, kv_indptr[:-1].tolist()], device)
        assemble_always(ranges.indptr, ranges.starts, ranges.ends, indexed_end, ends, starts,
                        max_ranges=ranges.max_ranges, out=shared)
    if heads > 1:
        shared = shared.repeat(heads)  # [H · nnz]: every head's lists share the always parts
    width = heads * nnz
    kv_positions = shared[None].expand(num_layers, width).clone() if num_layers > 1 else shared[None]
    kept_requests = [(b, h) for b in range(batch) if kept[b] is not None for h in range(heads)]
    if kept_requests:
        assert slab is not None, "build_plan: kept selections need their slab"
        # head h's part sits at h × stride in the slab row (stride = reserved width / heads: f when every
        # head took f; the question's f when mass budgets left the heads shorter, then f_b here is less)
        slab.copy_into(kv_positions, [kept[b] for b, _ in kept_requests],
                       [int(kv_indptr[b] + a[b]) + h * nnz for b, h in kept_requests],
                       [int(f[b]) for b, _ in kept_requests],
                       offsets=[h * (slab.row_width(kept[b]) // heads if heads > 1 else 0) for b, h in kept_requests])
    due = tuple(b for b in range(batch) if kept[b] is None and num_selected[b])
    kv_request = torch.repeat_interleave(torch.arange(batch, device=device), (a + f).to(device), output_size=nnz)
    return ForwardPlan(
        indptr_from_counts(q_lens), q_positions, kv_indptr, kv_positions, kv_request, a, due,
        int(q_lens.max()) if batch else 0, int((a + f).max()) if batch else 0, padded, heads,
    )
