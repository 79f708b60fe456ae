"""The pool views, requests, clusters and per-budget attended lists of `gpu_decode_step.py` (shared with
`gpu_flashinfer_rows.py`), built on the device with the project's kernels (K4 for the always part).

Layout (SGLang's): per layer one ``[slots, kv_heads, head_dim]`` K and V tensor; slot 0 is padding; request
``b``'s ``N`` tokens are slots ``1 + b·N .. (b+1)·N``. Per request the first `SINKS` tokens and the last
`TEXT` are always attended; the visual span between them is cut into contiguous clusters of 8–64 tokens.
"""

from __future__ import annotations

import torch
from gpu_kernels_import import load_kernels

__all__ = ["K", "SINKS", "TEXT", "Setup", "BudgetLists", "assemble_always_into", "row_bytes"]

K = load_kernels()

SINKS, TEXT = 4, 128
"""Always attended per request: 4 sinks and 128 text tokens at the end (the recent window lies inside the text)."""


class Setup:
    """The pool's views, the requests' slots and the clusters (member CSR, centroids, spreads, costs) of one
    (N, bs); every budget's lists are built from it (`BudgetLists`)."""

    def __init__(self, n: int, bs: int, k_layers, v_layers, device):
        self.n, self.bs, self.device = n, bs, device
        self.k, self.v = k_layers, v_layers
        self.req_to_token = (1 + torch.arange(bs, device=device)[:, None] * n
                             + torch.arange(n, device=device)).to(torch.int32)  # [bs, N] (slot 0: padding)
        self.token_row = torch.arange(bs, device=device)
        # always part: sinks + trailing text, as ranges expanded by K4
        ranges = K.assemble_always.pack_ranges([(torch.tensor([0, n - TEXT]), torch.tensor([SINKS, n]))] * bs)
        self.max_ranges = ranges.max_ranges
        self.range_indptr, self.range_starts, self.range_ends = (t.to(device) for t in ranges[:3])
        self.always = SINKS + TEXT
        self.seq_lens = torch.full((bs,), n, dtype=torch.int64, device=device)
        sizes = self._cluster_sizes(n)  # clusters over the visual span [SINKS, n - TEXT)
        c = self.num_clusters = sizes.numel()
        member_indptr = torch.zeros(c + 1, dtype=torch.int64)
        member_indptr[1:] = torch.cumsum(sizes, 0)
        self.member_indptr = member_indptr.to(device)  # one membership shape shared by every request
        self.member_positions = (SINKS + torch.arange(n - TEXT - SINKS)).to(device)
        self.cluster_base = torch.zeros(bs, dtype=torch.int64, device=device)
        self.costs = sizes.to(device)[None].expand(bs, c).contiguous()  # [bs, C] int64, all eligible
        self.centroids, self.spreads = self._summaries(sizes.to(device))
        self.lo = torch.full((bs,), SINKS, dtype=torch.int64, device=device)
        self.hi = torch.full((bs,), n - TEXT, dtype=torch.int64, device=device)
        self.dense_indptr = torch.arange(bs + 1, device=device) * n
        self.dense_slots = self.req_to_token.flatten().long()  # [bs·N] int64

    @staticmethod
    def _cluster_sizes(n: int) -> torch.Tensor:
        """``[C] int64`` sizes drawn from 8–64 (mean ~36) until the visual span is covered, the last one cut
        (seeded by N, so `need_bytes` can count the clusters before the pool exists)."""
        visual = n - TEXT - SINKS
        sizes = torch.randint(8, 65, (visual // 8 + 1,), generator=torch.Generator().manual_seed(n))
        ends = torch.cumsum(sizes, 0)
        count = int(torch.searchsorted(ends, visual)) + 1  # clusters until the span is covered
        sizes = sizes[:count].clone()
        sizes[-1] -= int(ends[count - 1]) - visual
        return sizes

    def _summaries(self, sizes: torch.Tensor):
        """Per layer ``centroids [bs, C, H, D]`` and ``spreads [bs, C, H]`` float32 from the pool's keys, one
        request at a time (a ``[V, H, D]`` fp32 temporary, not ``[bs, V, H, D]``: 256K × 8 must fit)."""
        owner = torch.repeat_interleave(torch.arange(sizes.numel(), device=sizes.device), sizes)  # [V]
        centroids, spreads = [], []
        for k_layer in self.k:
            _, heads, dim = k_layer.shape
            cent = torch.empty(self.bs, sizes.numel(), heads, dim, dtype=torch.float32, device=self.device)
            spread = torch.empty(self.bs, sizes.numel(), heads, dtype=torch.float32, device=self.device)
            for b in range(self.bs):
                keys = k_layer[self.req_to_token[b, SINKS : self.n - TEXT].long()].float()  # [V, H, D]
                cent[b] = keys.new_zeros(sizes.numel(), heads, dim).index_add_(0, owner, keys) / sizes[:, None, None]
                sq = keys.new_zeros(sizes.numel(), heads).index_add_(0, owner, keys.square().sum(-1))
                spread[b] = sq / sizes[:, None] - cent[b].square().sum(-1)
            centroids.append(cent)
            spreads.append(spread)
        return centroids, spreads


class BudgetLists:
    """One budget's attended lists: ``always + min(budget, visual)`` slots per request, per layer, and the
    question's kept selection (``slab [L, bs, budget]`` int64, what ``req_to_selection`` holds)."""

    def __init__(self, s: Setup, budget: int):
        num_layers, bs, n, device = len(s.k), s.bs, s.n, s.device
        self.budget = budget
        a = self.sparse_len = s.always + min(budget, n - TEXT - SINKS)
        self.sparse_indptr = torch.arange(bs + 1, device=device) * a
        f = a - s.always
        # the kept selections of the question: layer l keeps a strided pattern of visual tokens shifted by l
        sel = (torch.arange(f, device=device)[None, None] * 7 + torch.arange(num_layers, device=device)[:, None, None]
               * 131 + torch.arange(bs, device=device)[None, :, None] * 17) % (n - TEXT - SINKS) + SINKS
        self.selected_positions = sel  # [L, bs, f] int64
        self.slab = torch.gather(s.req_to_token.long()[None].expand(num_layers, -1, -1), 2, sel)  # [L, bs, f]
        self.lists = torch.empty(num_layers, bs * a, dtype=torch.int64, device=device)  # per-layer index buffers
        self.out_offset = self.sparse_indptr[:-1].contiguous()
        self.budgets = torch.full((bs,), budget, dtype=torch.int64, device=device)
        self.sel_offset = self.out_offset + s.always


def assemble_always_into(s: Setup, lists: torch.Tensor, sparse_len: int, out_offset, impl) -> None:
    """K4 once per step: the always part of every request into ``lists[0]``, copied into every other layer's
    list (``lists [L, bs·sparse_len]``, int32 or int64)."""
    view = lists.view(len(s.k), s.bs, sparse_len)
    always = K.assemble_always.assemble_always(
        s.range_indptr, s.range_starts, s.range_ends, s.seq_lens, s.seq_lens, out_offset,
        max_ranges=s.max_ranges, req_to_token=s.req_to_token, token_row=s.token_row, out=lists[0], impl=impl)
    view[1:, :, : s.always] = always.view(s.bs, sparse_len)[None, :, : s.always]


def row_bytes(s: Setup) -> int:
    """K + V bytes of one token in one layer."""
    return 2 * s.k[0].shape[1] * s.k[0].shape[2] * s.k[0].element_size()
