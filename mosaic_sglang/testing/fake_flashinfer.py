"""A stand-in for ``flashinfer``'s two paged wrappers, so the Mosaic backend's FlashInfer route runs
through ``sgl.Engine`` on CPU (``MOSAIC_ATTENTION_RUNNER=fake-flashinfer``).

It keeps FlashInfer 0.7.2's contract where the route depends on it — the constructor, ``plan`` and
``forward`` signatures the runner calls (checked against the installed ``flashinfer`` by
``tests/test_sglang_symbols.py``), lengths planned once from a host ``indptr``, the page list read from
``_paged_kv_indices_buf`` at run time, a 3-D cache read as page size 1, the prefill mask aligned at the
bottom right — and checks what the route promises, raising `FakeFlashInferError` (the scheduler dies, the
test fails) when it is broken:

* only the ``fa2`` backend, ``NHD`` layout, page size 1, last pages of length 1, int32 lists;
* every run has a plan, queries of the planned shape and head counts, and a page list of at least the
  planned length whose entries are rows of the cache;
* within one plan every run reads a page list at a different address (one buffer per layer: a layer can
  never attend the previous layer's list by accident) — so one plan serves a whole forward;
* in CUDA-graph mode (decode), fixed ``indptr`` / page-list / last-page buffers given to the constructor,
  plans of the fixed batch size copied into them, and runs that read the fixed buffers: inside an
  `EmulatedGraph` a run is one opaque kernel reading q, the caches and those buffers (`graph_kernel`).

Outputs come from the project's torch references (`sparse_decode_reference`, and
`attended_attention_reference` with positions ``0..n-1`` for the list and ``n-q..n-1`` for the queries,
which is the bottom-right causal mask). With ``MOSAIC_FAKE_FLASHINFER_LOG`` set, every plan and run
appends a JSON line to ``fake-flashinfer-<pid>.jsonl`` there.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Optional

import torch

from mosaic_sglang.kernels.attended_attention import attended_attention_reference
from mosaic_sglang.kernels.sparse_decode import sparse_decode_reference

from ..config import MOSAIC_FAKE_FLASHINFER_LOG
from .graph_capture import graph_kernel

__all__ = ["BatchDecodeWithPagedKVCacheWrapper", "BatchPrefillWithPagedKVCacheWrapper", "FakeFlashInferError",
           "read_log"]

_PLAN_IDS = itertools.count()


class FakeFlashInferError(AssertionError):
    """The FlashInfer route broke a promise the real wrappers would silently serve wrong."""


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise FakeFlashInferError(f"fake flashinfer: {message}")


def _log(record: dict) -> None:
    folder = MOSAIC_FAKE_FLASHINFER_LOG.read()
    if folder is None:
        return
    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder) / f"fake-flashinfer-{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def read_log(folder) -> list[dict]:
    """Every record the fake wrappers of every process wrote under ``folder``."""
    records = []
    for path in sorted(Path(folder).glob("fake-flashinfer-*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


class _PagedWrapper:
    """What both wrappers share: the constructor's checks, the plan's bookkeeping and the run's checks."""

    kind = "abstract"

    def __init__(self, float_workspace_buffer: torch.Tensor, kv_layout: str = "NHD", use_cuda_graph: bool = False,
                 paged_kv_indices_buffer: Optional[torch.Tensor] = None, backend: str = "auto",
                 indptr_buffer: Optional[torch.Tensor] = None, last_page_len_buffer: Optional[torch.Tensor] = None) -> None:
        _check(kv_layout == "NHD", f"kv_layout: expected 'NHD' (SGLang's pool), got {kv_layout!r}")
        _check(backend == "fa2", f"backend: expected 'fa2' (the only one that reads the page list at run time), "
                                 f"got {backend!r}")
        if use_cuda_graph:
            _check(all(torch.is_tensor(b) for b in (indptr_buffer, paged_kv_indices_buffer, last_page_len_buffer)),
                   "cudagraph mode: expected fixed indptr, page-list and last-page buffers")
            _check(indptr_buffer.numel() == last_page_len_buffer.numel() + 1, "cudagraph mode: indptr is batch + 1")
        self.device = float_workspace_buffer.device
        self._use_cuda_graph = use_cuda_graph
        self._paged_kv_indices_buf = paged_kv_indices_buffer
        self._paged_kv_indptr_buf, self._paged_kv_last_page_len_buf = indptr_buffer, last_page_len_buffer
        self._planned: Optional[dict] = None

    def _plan(self, kv_indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim, page_size, *,
              q_data_type="float16", kv_data_type=None, **extra):
        _check(page_size == 1, f"page_size: expected 1, got {page_size}")
        # as FlashInfer: dtypes are fixed at plan time (default fp16, KV as Q) and every run must match them
        as_dtype = lambda d: getattr(torch, d) if isinstance(d, str) else d  # "float16" or torch.float16
        q_dtype = as_dtype(q_data_type)
        kv_dtype = q_dtype if kv_data_type is None else as_dtype(kv_data_type)
        _check(kv_indptr.dtype == torch.int32 and indices.dtype == torch.int32, "indptr/indices: expected int32")
        _check(bool((last_page_len == 1).all()), "last_page_len: expected all ones at page size 1")
        _check(num_qo_heads % num_kv_heads == 0, f"heads: {num_qo_heads} query heads over {num_kv_heads} KV heads")
        indptr = kv_indptr.cpu().to(torch.int64)
        _check(last_page_len.numel() == indptr.numel() - 1, "last_page_len: one per request")
        if self._use_cuda_graph:  # as FlashInfer does: copied into the fixed buffers the graph reads
            _check(indptr.numel() == self._paged_kv_indptr_buf.numel(), "cudagraph mode: the batch size is fixed")
            _check(indices.numel() <= self._paged_kv_indices_buf.numel(), "cudagraph mode: page list too long")
            self._paged_kv_indptr_buf.copy_(kv_indptr)
            self._paged_kv_last_page_len_buf.copy_(last_page_len)
            self._paged_kv_indices_buf[: indices.numel()].copy_(indices)
        else:
            self._paged_kv_indices_buf = indices.to(self.device)  # as FlashInfer does outside CUDA graphs
        self._planned = dict(id=next(_PLAN_IDS), kv_indptr=indptr, heads=(num_qo_heads, num_kv_heads, head_dim),
                             dtypes=(q_dtype, kv_dtype), buffers=set(), **extra)
        _log({"event": "plan", "kind": self.kind, "plan": self._planned["id"], "pid": os.getpid(),
              "batch": indptr.numel() - 1, "nnz": int(indptr[-1]), "kv_heads": num_kv_heads})

    def _page_list(self, q: torch.Tensor, paged_kv_cache, sm_scale) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checks one run against its plan; ``(k [S, Hkv, D], v [S, Hkv, Dv], slots [nnz] int64)``."""
        plan = self._planned
        _check(plan is not None, "run before plan")
        _check(sm_scale is not None, "sm_scale: expected the layer's scale")
        k, v = paged_kv_cache
        k, v = (x.squeeze(1) if x.dim() == 4 else x for x in (k, v))  # [pages, 1, H, D] → [S, H, D]
        num_qo, num_kv, head_dim = plan["heads"]
        _check(tuple(q.shape[1:]) == (num_qo, head_dim), f"q: expected [*, {num_qo}, {head_dim}], got {tuple(q.shape)}")
        _check(k.shape[1:] == (num_kv, head_dim), f"cache: expected [S, {num_kv}, {head_dim}], got {tuple(k.shape)}")
        _check((q.dtype, k.dtype) == plan["dtypes"], f"dtypes: planned q/kv {plan['dtypes']}, run with "
                                                     f"{(q.dtype, k.dtype)}")
        buf = self._paged_kv_indices_buf
        nnz = int(plan["kv_indptr"][-1])
        _check(buf.dtype == torch.int32 and buf.dim() == 1 and buf.numel() >= nnz,
               f"page list: expected int32 [>= {nnz}], got {buf.dtype} {tuple(buf.shape)}")
        _check(buf.data_ptr() not in plan["buffers"], "page list: a second run under one plan read a list "
                                                      "at the same address (expected one buffer per layer)")
        plan["buffers"].add(buf.data_ptr())
        slots = buf[:nnz].to(torch.int64)
        _check(nnz == 0 or bool((slots >= 0).all() and (slots < k.shape[0]).all()), "page list: entries out of range")
        _log({"event": "run", "kind": self.kind, "plan": plan["id"], "pid": os.getpid(), "buffer": buf.data_ptr()})
        return k, v, slots


class BatchDecodeWithPagedKVCacheWrapper(_PagedWrapper):
    """Decode: one query per request over its page list."""

    kind = "decode"

    def __init__(self, float_workspace_buffer: torch.Tensor, kv_layout: str = "NHD", use_cuda_graph: bool = False,
                 use_tensor_cores: bool = False, paged_kv_indptr_buffer=None, paged_kv_indices_buffer=None,
                 paged_kv_last_page_len_buffer=None, backend: str = "auto", jit_args=None) -> None:
        super().__init__(float_workspace_buffer, kv_layout, use_cuda_graph, paged_kv_indices_buffer, backend,
                         paged_kv_indptr_buffer, paged_kv_last_page_len_buffer)

    def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim, page_size, *,
             q_data_type="float16", kv_data_type=None, **kwargs) -> None:
        self._plan(indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim, page_size,
                   q_data_type=q_data_type, kv_data_type=kv_data_type)

    def forward(self, q, paged_kv_cache, pos_encoding_mode="NONE", q_scale=None, k_scale=None, v_scale=None,
                window_left=-1, logits_soft_cap=None, sm_scale=None, rope_scale=None, rope_theta=None) -> torch.Tensor:
        fixed = [self._paged_kv_indptr_buf, self._paged_kv_last_page_len_buf] if self._use_cuda_graph else []
        with graph_kernel("flashinfer.decode", reads=[q, *paged_kv_cache, self._paged_kv_indices_buf, *fixed],
                          scalars=(sm_scale,)) as produced:
            k, v, slots = self._page_list(q, paged_kv_cache, sm_scale)
            # a graph replays with the fixed device indptr (FlashInfer's kernels read it); else the planned one
            indptr = self._paged_kv_indptr_buf.cpu().to(torch.int64) if self._use_cuda_graph else self._planned["kv_indptr"]
            _check(torch.equal(indptr, self._planned["kv_indptr"]), "cudagraph mode: indptr buffer differs from the plan")
            _check(q.shape[0] == indptr.numel() - 1, f"q: expected one row per planned request ({indptr.numel() - 1}), "
                                                     f"got {q.shape[0]}")
            return produced(sparse_decode_reference(q, k, v, indptr.to(q.device), slots, scale=sm_scale))


class BatchPrefillWithPagedKVCacheWrapper(_PagedWrapper):
    """Prefill: each request's queries over its page list, causal aligned at the bottom right."""

    kind = "prefill"

    def __init__(self, float_workspace_buffer: torch.Tensor, kv_layout: str = "NHD", use_cuda_graph: bool = False,
                 qo_indptr_buf=None, paged_kv_indptr_buf=None, paged_kv_indices_buf=None,
                 paged_kv_last_page_len_buf=None, custom_mask_buf=None, mask_indptr_buf=None,
                 backend: str = "auto", jit_args=None) -> None:
        _check(not use_cuda_graph, "prefill in cudagraph mode: not served by the fake (Mosaic captures decode only)")
        super().__init__(float_workspace_buffer, kv_layout, use_cuda_graph, paged_kv_indices_buf, backend)

    def plan(self, qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len, num_qo_heads, num_kv_heads,
             head_dim_qk, page_size, head_dim_vo=None, custom_mask=None, packed_custom_mask=None, causal=False, *,
             q_data_type="float16", kv_data_type=None, **kwargs) -> None:
        _check(custom_mask is None and packed_custom_mask is None, "custom masks: not served by the fake")
        q_indptr = qo_indptr.cpu().to(torch.int64)
        _check(q_indptr.numel() == paged_kv_indptr.numel(), "qo_indptr and paged_kv_indptr: one request count")
        self._plan(paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len, num_qo_heads, num_kv_heads, head_dim_qk,
                   page_size, q_data_type=q_data_type, kv_data_type=kv_data_type, qo_indptr=q_indptr, causal=causal)

    def forward(self, q, paged_kv_cache, causal=False, pos_encoding_mode="NONE", use_fp16_qk_reduction=False,
                k_scale=None, v_scale=None, window_left=-1, logits_soft_cap=None, sm_scale=None, rope_scale=None,
                rope_theta=None) -> torch.Tensor:
        with graph_kernel("flashinfer.prefill", reads=[q, *paged_kv_cache, self._paged_kv_indices_buf],
                          scalars=(sm_scale, causal)) as produced:
            return produced(self._prefill(q, paged_kv_cache, causal, sm_scale))

    def _prefill(self, q, paged_kv_cache, causal: bool, sm_scale) -> torch.Tensor:
        k, v, slots = self._page_list(q, paged_kv_cache, sm_scale)
        plan = self._planned
        _check(causal == plan["causal"], f"causal: planned {plan['causal']}, run with {causal}")
        q_indptr, kv_indptr = plan["qo_indptr"], plan["kv_indptr"]
        _check(q.shape[0] == int(q_indptr[-1]), f"q: expected {int(q_indptr[-1])} rows, got {q.shape[0]}")
        q_lens, kv_lens = q_indptr.diff(), kv_indptr.diff()
        _check(bool((kv_lens >= q_lens).all()) or not causal, "causal: a request lists fewer entries than queries")
        # the bottom-right mask as positions: list entry j of a request sits at j, its query i at n - q + i
        kv_positions = torch.arange(int(kv_indptr[-1])) - torch.repeat_interleave(kv_indptr[:-1], kv_lens)
        q_positions = (torch.arange(int(q_indptr[-1])) - torch.repeat_interleave(q_indptr[:-1], q_lens)
                       + torch.repeat_interleave(kv_lens - q_lens, q_lens))
        if not causal:
            q_positions = torch.full_like(q_positions, 1 << 40)
        device = q.device
        return attended_attention_reference(
            q, q_indptr.to(device), q_positions.to(device), k, v, kv_indptr.to(device), slots, kv_positions.to(device),
            scale=sm_scale, max_q=int(q_lens.max()) if q_lens.numel() else 0,
            max_kv=int(kv_lens.max()) if kv_lens.numel() else 0)
