"""The ``mosaic`` attention backend: each request attends only its attended set at each layer.

CPU path built on SGLang's ``TorchNativeAttnBackend`` (K/V writes, pools, GQA): the per-request gather
over ``req_to_token[row, :seq_len]`` is replaced by a gather over the positions the retrieval policy
returns (sinks ∪ recent window ∪ text ∪ selected clusters), computed by
`mosaic_sglang.kernels.attended_attention` with a position-causal mask. With a policy that attends
everything, the output equals the dense ``torch_native`` backend's.

Per forward (FlashInfer's plan/run split): `init_forward_metadata` builds one `RequestLayout` per
request and asks the policy for a `ForwardPlan` (one ``kv_indptr`` for every layer, per-layer position
lists built on the KV pool's device; a decode step's kept selections come from the policy's
``req_to_selection`` slab there); each layer's forward takes its list from the policy (`layer_kv`),
maps positions to KV slots with one device gather from SGLang's ``req_to_token`` rows, and runs one
attention call over the whole batch; the host copies of the rows that planning reads are extended by one slot per decode step
(`RequestRows`), not copied whole; after the last layer the policy may index the new tokens (their K/V are then in
the pool for every layer). A decode step that keeps its question's selection does no host work and
no host synchronisation inside a layer, and neither does a re-select step with the exact fill (the
selected parts have their planned lengths, `select_layer_into`); checked with ``MOSAIC_CHECK_NO_SYNC=1``.

Attention kernels (`attention_runners`): on CUDA FlashInfer's fa2 paged wrappers, planned once per
forward and pointed at each layer's list (`mosaic_sglang.attention.FlashInferRunner`), or the Triton kernels
(decode: `sparse_decode`, split-K over the layer's CSR of slots; extend: SGLang's extend attention over the
chunk plus the list's prefix entries) where FlashInfer is absent or cannot serve a plan; on CPU the torch
reference `attended_attention` (``MOSAIC_ATTENTION_RUNNER`` picks another: tests run the Triton route under
the interpreter and the FlashInfer route with a fake FlashInfer).
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, List, Optional

import torch

from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend
from sglang.srt.layers.radix_attention import AttentionType
from sglang.srt.mem_cache.memory_pool import KVWriteLoc

from mosaic_sglang.kernels.extent_copy import gather_slots, layer_table

from ..attention import FlashInferRunner, LayerLists
from ..config import MOSAIC_CHECK_NO_SYNC, MOSAIC_EMULATE_DECODE_GRAPHS, MosaicConfigError
from ..offload import DevicePool, decode_host
from .tensor_parallel import decision_log, head_gather
from ..serving import ForwardPlan, RequestLayout
from ..serving.head_major import head_block_lists, head_slots, pool_heads_as_slots, rows_head_major, write_token_major
from ..testing.host_sync import no_host_sync
from .attention_layers import check_attention_layers
from .attention_runners import choose_runners
from .decode_graphs import DecodeGraphs, EmulatedDecodeGraphs, graph_batch_sizes
from .frame_ids import frame_ids_from_mm_inputs
from .graph_phases import check_graph_phases, resolved_graph_config
from .runtime import get_runtime

if TYPE_CHECKING:
    from sglang.srt.layers.radix_attention import RadixAttention
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch
    from sglang.srt.model_executor.model_runner import ModelRunner

__all__ = ["MosaicAttnBackend"]

logger = logging.getLogger(__name__)


class MosaicAttnBackend(TorchNativeAttnBackend):
    """Attention over per-request attended sets (see module docstring)."""

    def __init__(self, model_runner: "ModelRunner") -> None:
        super().__init__(model_runner)
        check_attention_layers(model_runner.model)
        self.runtime = get_runtime()
        check_graph_phases(resolved_graph_config(), self.runtime.config.graph_text_tokens)
        pool = self.token_to_kv_pool
        self.start_layer = getattr(pool, "start_layer", 0)
        self.last_layer = self.start_layer + pool.layer_num - 1
        k0, v0 = pool.get_key_buffer(self.start_layer), pool.get_value_buffer(self.start_layer)
        model_dtype = model_runner.model_config.dtype
        if k0.dtype != model_dtype:  # every runner (and FlashInfer's plan) takes queries and K/V in one dtype
            raise MosaicConfigError(f"--enable-mosaic with --kv-cache-dtype: expected K/V in the model's dtype "
                                    f"({model_dtype}; 'auto' on an unquantized checkpoint), got a KV pool of {k0.dtype}")
        allocator = model_runner.token_to_kv_pool_allocator
        layers = range(self.start_layer, self.start_layer + pool.layer_num)
        device_pool = DevicePool(
            k_layers=[pool.get_key_buffer(layer_id) for layer_id in layers],
            v_layers=[pool.get_value_buffer(layer_id) for layer_id in layers],
            alloc=allocator.alloc, free=allocator.free, page_size=allocator.page_size,
        )
        self._heads = head_gather()  # tensor parallel: the cluster logic sees every rank's heads
        self._local_kv_heads = k0.shape[1]
        self._own = None  # tensor parallel with per-KV-head lists: this rank's block of them (`_own_heads`)
        self.runtime.bind_model(
            num_layers=pool.layer_num, num_kv_heads=k0.shape[1], head_dim=k0.shape[2], v_head_dim=v0.shape[-1],
            dtype=k0.dtype, read_slot_keys=self.read_slot_keys, read_slot_kv=self.read_slot_kv, device_pool=device_pool,
            device=k0.device, index_kv_heads=k0.shape[1] * (self._heads.size if self._heads else 1),
            decision_log=decision_log(), tp_rank=self._heads.rank if self._heads else 0,
            tp_size=self._heads.size if self._heads else 1,
        )
        self.layouts: List[RequestLayout] = []
        self.plan: ForwardPlan | None = None
        self.forward_timings = {"plan_s": 0.0, "select_s": 0.0, "index_s": 0.0}
        """Host seconds of this forward spent planning, selecting (inside layers) and indexing new tokens
        after the last layer, the requests whose ``req_to_token`` row was copied whole (0 in a decode
        step of known requests) and which attention route ran; read by `forward_timer` with
        ``MOSAIC_FORWARD_LOG_DIR`` set."""
        self._check_no_sync = MOSAIC_CHECK_NO_SYNC.read()
        self._runners = choose_runners(
            device=k0.device, num_layers=pool.layer_num, num_qo_heads=model_runner.model_config.num_attention_heads
            // max(1, self._heads.size if self._heads else 1), num_kv_heads=k0.shape[1], head_dim=k0.shape[2],
            dtype=k0.dtype)
        self._runner = self._runners.primary
        self._graphs: DecodeGraphs | None = None
        self._graph_bs: int | None = None  # this decode step replays the graph of this batch size
        self._graph_pending = None  # (plan, row ids) of the step SGLang's graph runner replays next
        self._pool_tables = None  # K7 layer pointer tables of the pool (CUDA offload reads)
        self._preplanned = False
        if MOSAIC_EMULATE_DECODE_GRAPHS.read() and self.runtime.config.graph_text_tokens:
            self._graphs = EmulatedDecodeGraphs(
                self._flashinfer_runner(), pool.layer_num, self._graph_capacity(), graph_batch_sizes(8), k0.device,
                num_qo_heads=model_runner.model_config.num_attention_heads // max(1, self._heads.size if self._heads else 1),
                head_dim=k0.shape[2], v_head_dim=v0.shape[-1], dtype=k0.dtype)
        if self.use_sliding_window_kv_pool:
            raise ValueError("mosaic attention backend: sliding-window KV pools are not supported")

    # -- plan (once per forward) ---------------------------------------------------------------------

    def init_forward_metadata(self, forward_batch: "ForwardBatch") -> None:
        if isinstance(self._graphs, EmulatedDecodeGraphs) and self._emulate_graph_step(forward_batch):
            return
        if self._preplanned:  # the decode-graph hook planned this batch and sent it down the eager path
            self._preplanned = False
            return
        start, reads = time.perf_counter(), self.runtime.rows.reads
        self._plan_forward(forward_batch)
        self._record_plan(start, reads, self._runner.name if self._graph_bs is None else "flashinfer-graph")

    def _record_plan(self, start: float, reads: int, attention: str) -> None:
        """This forward's `forward_timings` after planning (started at ``start``, ``reads`` rows read before)."""
        self.forward_timings = {"plan_s": time.perf_counter() - start, "select_s": 0.0, "index_s": 0.0,
                                "rows_read": self.runtime.rows.reads - reads, "attention": attention}

    def _plan_forward(self, forward_batch: "ForwardBatch", graph_bs: int | None = None) -> None:
        """Plan the forward; ``graph_bs``: SGLang's decode graph runner would replay it padded to this batch
        size (`prepare_graph_step`): when it fits, the plan waits in ``_graph_pending`` for `out_graph`."""
        self._graph_bs, self._graph_pending = None, None
        super().init_forward_metadata(forward_batch)
        mode = forward_batch.forward_mode
        if mode.is_idle():
            self.layouts = []
            return
        is_decode = mode.is_decode()
        seq_lens = _cpu_list(forward_batch.seq_lens_cpu, forward_batch.seq_lens)
        rows = forward_batch.req_pool_indices.tolist()
        rids = forward_batch.rids or [f"row{r}" for r in rows]
        if is_decode:
            prefix_lens = [n - 1 for n in seq_lens]
        else:
            prefix_lens = _cpu_list(forward_batch.extend_prefix_lens_cpu, forward_batch.extend_prefix_lens)
        mm_inputs = forward_batch.mm_inputs or [None] * len(rows)
        # a request's prompt ends in this extend forward when its length reaches SGLang's unchunked one
        # (max(extend end, prompt length): a chunked request's is longer than its seq_len); read only for
        # `regroup_tail` (a host copy per extend forward); decode rows of a mixed forward also reach it, and
        # the policy acts once per request. A forward of prefill-only requests (``max_new_tokens=0``: a streaming
        # session's video chunks) ends no question: its tail waits for one, so spans are not cut at every chunk
        tail = self.runtime.config.regroups_tail and not is_decode and not forward_batch.is_prefill_only
        whole = forward_batch.orig_seq_lens if tail else None
        prompt_lens = whole.tolist() if whole is not None and whole.numel() == len(rows) else None
        req_to_token = self.req_to_token_pool.req_to_token
        # decode: each request's host copy grows by the slot SGLang just allocated (one [B] read, not a row each)
        one_each = is_decode and forward_batch.out_cache_loc.numel() == len(rows)
        new_slots = forward_batch.out_cache_loc.tolist() if one_each else [None] * len(rows)
        layouts = []
        for i, (rid, row, seq_len, prefix_len) in enumerate(zip(rids, rows, seq_lens, prefix_lens)):
            slots, frame_ids = self.runtime.rows.get(
                rid, row, seq_len, new_slot=new_slots[i],
                read_row=lambda: req_to_token[row, :seq_len].to("cpu", torch.int64),
                read_frame_ids=lambda: self._frame_ids(rid, seq_len, None if is_decode else mm_inputs[i]),
            )
            layouts.append(RequestLayout(rid=rid, row=row, prefix_len=prefix_len, extend_len=seq_len - prefix_len,
                                         frame_ids=frame_ids, slots=slots, counts=self.runtime.rows.counts(rid),
                                         prompt_done=prompt_lens is not None and seq_len >= prompt_lens[i]))
        self.layouts = layouts
        plan = self.runtime.policy.plan(layouts, is_decode)
        self.plan = plan
        # Slot of every list entry, gathered on the device from SGLang's rows at each layer:
        # req_to_token[entry_rows[e], position[e]]; the plan's lists are already on the device.
        # Host-resident requests are resolved per layer.
        # Per-KV-head lists (plan.heads > 1) are attended as H·B requests of one KV head each (`head_major`):
        # queries head-major, KV heads viewed as slots (slot s of head h is s·H + h).
        device = req_to_token.device
        attn = plan.head_major()
        self._row_ids = forward_batch.req_pool_indices.to(torch.int64)
        self._entry_rows, self._entry_head = self._entries(attn.kv_request, plan.heads)
        self._kv_indptr = attn.kv_indptr.to(device)  # every layer's, unless the plan is padded
        self._kv_indptr_host = attn.kv_indptr  # (host) where a host-resident request's entries lie
        self._host_requests = [i for i, req in enumerate(layouts) if self.runtime.rows.has_host(req.rid)]
        self._own = self._own_heads(plan, attn, device)
        if self._own is not None:
            attn = self._own.attn
        if graph_bs is not None:  # SGLang's graph runner: staged by out_graph, replayed if it fits
            if not self._host_requests and self._graphs.lists.fits(plan, graph_bs):
                self._graph_pending = (plan, self._row_ids)
                return
        primary = self._runners.primary
        self._runner = primary if primary.serves(attn) else self._runners.fallback
        heads = self._own.count if self._own is not None else plan.heads
        self._runner.begin_forward(attn, is_decode, device, per_kv_head=heads > 1)

    def _own_heads(self, plan: ForwardPlan, attn: ForwardPlan, device) -> Optional[SimpleNamespace]:
        """Tensor parallelism with per-KV-head lists: every rank's policy chose the lists of *all* KV heads
        (the same decisions and host reads on every rank), and this rank attends the block of its own heads
        (ranks hold heads in rank order). None when the rank holds every head the lists are for.

        Returns ``first``/``count`` (the block's heads), ``attn`` (the head-major plan of
        `ForwardPlan.head_block`, what the runner plans), and for the exact fill ``lo``/``hi`` (the block's
        entries in the whole head-major lists ``attn``), its ``kv_indptr`` (device) and
        ``entry_rows``/``entry_head`` (head within the block). Padded plans compact each layer's lists, so
        their block is found per layer (`head_block_lists`)."""
        local = self._local_kv_heads
        if plan.heads in (1, local):
            return None
        first = self._heads.rank * local
        own = SimpleNamespace(first=first, count=local, attn=plan.head_block(first, local).head_major())
        if not plan.padded:
            own.lo, own.hi, kv_indptr = head_block_lists(attn.kv_indptr, first, local, len(self.layouts))
            own.kv_indptr = kv_indptr.to(device)
            own.entry_rows, own.entry_head = self._entries(own.attn.kv_request, local)
        return own

    def _own_block(self, own: SimpleNamespace, kv_indptr: torch.Tensor, padded: bool):
        """``(lo, hi, indptr)`` of this rank's block in a layer's head-major lists ``kv_indptr``: planned for
        the exact fill, read per layer from a padded plan's compacted lists (a host sync, as compacting)."""
        if not padded:
            return own.lo, own.hi, own.kv_indptr
        return head_block_lists(kv_indptr, own.first, own.count, len(self.layouts))

    def _entries(self, kv_request: torch.Tensor, heads: int) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``(req_to_token row, KV head or None)`` of each list entry, from its list ``kv_request [nnz]``
        (head-major when ``heads > 1``: list ``h · B + b``)."""
        if heads == 1:
            return self._row_ids[kv_request], None
        batch = self._row_ids.numel()
        return self._row_ids[kv_request % batch], kv_request // batch

    def _frame_ids(self, rid: str, seq_len: int, mm_inputs) -> torch.Tensor:
        """Frame ids of a request's positions: from its multimodal items at extend, else those of the
        request's last row copy (`RequestRows`), padded with text."""
        known = self.runtime.rows.frame_ids(rid)
        if mm_inputs is not None or known is None:
            known = frame_ids_from_mm_inputs(mm_inputs, seq_len)
        if known.numel() >= seq_len:
            return known[:seq_len]
        return torch.cat([known, known.new_full((seq_len - known.numel(),), -1)])

    # -- run (per layer) -----------------------------------------------------------------------------

    def forward_extend(self, q, k, v, layer: "RadixAttention", forward_batch: "ForwardBatch", save_kv_cache=True):
        if layer.is_cross_attention or layer.attn_type == AttentionType.ENCODER_ONLY:
            return super().forward_extend(q, k, v, layer, forward_batch, save_kv_cache)
        return self._forward(q, k, v, layer, forward_batch, save_kv_cache)

    def forward_decode(self, q, k, v, layer: "RadixAttention", forward_batch: "ForwardBatch", save_kv_cache=True):
        if layer.is_cross_attention:
            return super().forward_decode(q, k, v, layer, forward_batch, save_kv_cache)
        return self._forward(q, k, v, layer, forward_batch, save_kv_cache)

    def _forward(self, q, k, v, layer: "RadixAttention", forward_batch: "ForwardBatch", save_kv_cache: bool):
        if (self._check_no_sync and forward_batch.forward_mode.is_decode() and self._graph_bs is None
                and not self.plan.padded):
            with no_host_sync():  # MOSAIC_CHECK_NO_SYNC=1: a decode layer (kept or re-selected, exact fill) must not sync
                return self._run_layer(q, k, v, layer, forward_batch, save_kv_cache)
        return self._run_layer(q, k, v, layer, forward_batch, save_kv_cache)

    def _run_layer(self, q, k, v, layer: "RadixAttention", forward_batch: "ForwardBatch", save_kv_cache: bool):
        if save_kv_cache and k is not None and v is not None:
            self.token_to_kv_pool.set_kv_buffer(
                layer, KVWriteLoc(forward_batch.out_cache_loc, self.swa_out_cache_loc), k, v
            )
        q = q.reshape(-1, layer.tp_q_head_num, layer.qk_head_dim)
        out = q.new_empty(q.shape[0], layer.tp_q_head_num, layer.v_head_dim)
        local = layer.layer_id - self.start_layer
        if self._graph_bs is not None:
            out = self._graph_layer(local, q, layer)
            return self._end_layer(layer, out)
        plan = self.plan
        start = time.perf_counter()
        # a layer that selects scores every rank's query heads (tensor parallel: gathered, see tensor_parallel.py)
        queries = self._heads(q, 1) if self._heads is not None and plan.select_due else q
        k_buffer = self.token_to_kv_pool.get_key_buffer(layer.layer_id)
        v_buffer = self.token_to_kv_pool.get_value_buffer(layer.layer_id)
        read_keys = self._layer_key_reader(local, k_buffer) if plan.select_due else None
        kv = self.runtime.policy.layer_kv(plan, local, queries, read_keys)
        self.forward_timings["select_s"] += time.perf_counter() - start
        device = q.device
        positions = kv.kv_positions
        if plan.padded:  # fill='whole' or mass budgets: this layer's compacted lists (head-major per KV head)
            kv_indptr = kv.kv_indptr
            entry_rows, entry_head = self._entries(kv.kv_request, plan.heads)
        else:
            kv_indptr, entry_rows, entry_head = self._kv_indptr, self._entry_rows, self._entry_head
        own = self._own  # tensor parallel, per-KV-head lists: this rank attends its own heads' block
        if own is not None and not self._host_requests:  # gather only this rank's entries
            lo, hi, kv_indptr = self._own_block(own, kv_indptr, plan.padded)
            positions = positions[lo:hi]
            if plan.padded:
                entry_rows, entry_head = entry_rows[lo:hi], entry_head[lo:hi] - own.first
            else:  # planned: no per-layer work in a decode step
                entry_rows, entry_head = own.entry_rows, own.entry_head
        # the runner's index dtype (FlashInfer's page lists are int32, like req_to_token: no cast round trip)
        slot_dtype = torch.int64 if self._host_requests else self._runner.slot_dtype
        slots = self.req_to_token_pool.req_to_token[entry_rows, positions].to(slot_dtype)
        if self._host_requests:
            # host-resident entries (offloaded clusters): gather device and host rows (all KV heads) into one
            # scratch; per-KV-head lists then pick their head of it like they would of the pool
            host_indptr = kv_indptr if plan.padded else self._kv_indptr_host
            k_buffer, v_buffer = self._gather_mixed(local, slots, host_indptr, k_buffer, v_buffer, plan.heads)
            slots = torch.arange(slots.numel(), device=device)
            if own is not None:  # every head's rows were read (the same host reads on every rank); attend this rank's
                lo, hi, kv_indptr = self._own_block(own, kv_indptr, plan.padded)
                slots, positions, entry_head = slots[lo:hi], positions[lo:hi], entry_head[lo:hi] - own.first
        if k is not None and v is not None:
            k = k.reshape(-1, layer.tp_k_head_num, layer.qk_head_dim)
            v = v.reshape(-1, layer.tp_v_head_num, layer.v_head_dim)
        heads, runner = (own.count if own is not None else plan.heads), self._runner
        if heads == 1:
            out = runner.run_layer(local, q, k, v, k_buffer, v_buffer, LayerLists(kv_indptr, slots, positions), out,
                                   layer.scaling)
        else:  # one KV head per list: KV heads as requests (serving/head_major.py, see _plan_forward)
            # the chunk's own K/V only feed SGLang's extend kernel (the others read the pool)
            own = runner.reads_own_kv and not forward_batch.forward_mode.is_decode() and k is not None and v is not None
            as_rows = lambda x: rows_head_major(x, heads) if own else None  # noqa: E731
            out_heads = out.new_empty(heads * q.shape[0], layer.tp_q_head_num // heads, layer.v_head_dim)
            lists = LayerLists(kv_indptr, head_slots(slots, entry_head, heads), positions)
            out_heads = runner.run_layer(local, rows_head_major(q, heads), as_rows(k), as_rows(v),
                                         pool_heads_as_slots(k_buffer), pool_heads_as_slots(v_buffer), lists, out_heads,
                                         layer.scaling)
            write_token_major(out_heads, out, heads)
        return self._end_layer(layer, out)

    def _layer_key_reader(self, local: int, k_buffer: torch.Tensor):
        """`LayerKeyReader` of this layer: ``(request indices, positions [n_j] per request) -> keys [n_j, H, D]``
        from the pool (this forward's own tokens are stored already). Under tensor parallelism every rank's
        heads, in one all-gather for all the requests (every rank reads the same positions: the same
        decisions). Host-resident positions (an offloaded window) are read from the host tier, this layer
        only: for requests that have some (a host sync there)."""
        def read(requests, positions):
            parts = []
            for i, where in zip(requests, positions):
                # the row as a 1-element index: a 0-d tensor index would be read back to the host (.item())
                slots = self.req_to_token_pool.req_to_token[self._row_ids[i : i + 1], where].to(torch.int64)
                if i in self._host_requests:
                    host = slots < 0
                    keys = k_buffer.new_empty((slots.numel(),) + tuple(k_buffer.shape[1:]))
                    keys[~host] = k_buffer[slots[~host]]
                    rows = decode_host(slots[host].cpu())
                    keys[host] = self.runtime.host.read_keys(rows, local).to(keys.device, keys.dtype)
                else:
                    keys = k_buffer[slots]
                parts.append(keys)
            if self._heads is None or not parts:
                return parts
            gathered = self._heads(torch.cat(parts), 1)  # [Σ n_j, H, D]
            return list(torch.split(gathered, [p.shape[0] for p in parts]))
        return read

    def _end_layer(self, layer: "RadixAttention", out: torch.Tensor) -> torch.Tensor:
        if layer.layer_id == self.last_layer and self._graph_bs is None:  # (a graph step counts when staged)
            start = time.perf_counter()
            self.runtime.policy.end_forward()
            self.forward_timings["index_s"] = time.perf_counter() - start
            self.runtime.after_forward()
        return out.view(-1, layer.tp_q_head_num * layer.v_head_dim)

    # -- captured decode steps (integration/decode_graphs.py) ----------------------------------------------

    def _graph_capacity(self) -> int:
        config = self.runtime.config
        return config.budget + config.sink_tokens + config.recent_window + config.graph_text_tokens

    def _flashinfer_runner(self) -> FlashInferRunner:
        runner = self._runners.primary
        if not isinstance(runner, FlashInferRunner):
            raise MosaicConfigError("mosaic config field 'graph_text_tokens': captured decode steps run on the "
                                    f"FlashInfer route, expected FlashInfer's paged wrappers, got the {runner.name} "
                                    "runner (graph_text_tokens=0 keeps decode eager)")
        return runner

    def init_cuda_graph_state(self, max_bs: int, max_num_tokens: int, kv_indices_buf=None) -> None:
        """SGLang's decode graph runner starts (``graph_text_tokens > 0``): the static lists for ``max_bs``."""
        if not self.runtime.config.graph_text_tokens:
            raise MosaicConfigError("mosaic config field 'graph_text_tokens': expected N > 0 with decode CUDA graphs "
                                    "on (or --disable-decode-cuda-graph), got 0")
        device = self.token_to_kv_pool.get_key_buffer(self.start_layer).device
        self._graphs = DecodeGraphs(self._flashinfer_runner(), self.last_layer - self.start_layer + 1,
                                    self._graph_capacity(), [max_bs], device)

    def get_cuda_graph_seq_len_fill_value(self) -> int:
        return 1  # padded rows attend one entry (row 0, position 0), as FlashInfer's backend pads

    def init_forward_metadata_out_graph(self, forward_batch, in_capture: bool = False) -> None:
        """Before capturing or replaying a decode graph of ``forward_batch.batch_size`` (padded) requests: the
        lists into the static buffers and their lengths into the graph's plan (host work, out of the graph)."""
        bs = int(forward_batch.batch_size)
        self.swa_out_cache_loc = None  # no sliding-window pools (refused at init)
        self._graph_bs = bs
        if in_capture:
            self._graphs.stage_capture(forward_batch.req_pool_indices[:bs].to(torch.int64), bs)
            return
        assert self._graph_pending is not None, "mosaic: a decode graph replays a step its hook did not plan"
        plan, row_ids = self._graph_pending
        self._graphs.stage(plan, row_ids, bs)
        self._graph_pending = None  # after staging: a failed stage leaves the step planned for a retry
        self.runtime.after_forward()  # no Python runs at replay: the step's totals now

    def prepare_graph_step(self, forward_batch: "ForwardBatch", padded_bs: int) -> bool:
        """From the decode graph runner's ``can_run_graph`` (`decode_graph_hook`): plan this decode step now;
        True when it replays the graph of ``padded_bs`` requests, False when it must run eagerly (then the
        eager ``init_forward_metadata`` keeps this plan instead of planning again)."""
        start, reads = time.perf_counter(), self.runtime.rows.reads
        self._plan_forward(forward_batch, graph_bs=padded_bs)
        replay = self._graph_pending is not None
        self._record_plan(start, reads, "flashinfer-graph" if replay else self._runner.name)
        self._preplanned = not replay
        log = getattr(self.runtime.policy, "decision_log", None)
        if log is not None and log.active():  # under TP every rank must take the same path (its graph has collectives)
            log("mosaic decode graph replay=%s batch=%d padded=%d", replay, int(forward_batch.batch_size), padded_bs)
        return replay

    def _emulate_graph_step(self, forward_batch: "ForwardBatch") -> bool:
        """``MOSAIC_EMULATE_DECODE_GRAPHS``: SGLang's replay sequence on CPU — the hook's `prepare_graph_step`,
        then `init_forward_metadata_out_graph` on a padded view without request ids; False: run eagerly."""
        padded = self._graphs.padded_batch(int(forward_batch.batch_size))
        if not forward_batch.forward_mode.is_decode() or padded is None:
            return False
        if not self.prepare_graph_step(forward_batch, padded):
            return False  # planned: the eager call that follows keeps this plan
        rows = forward_batch.req_pool_indices
        view = SimpleNamespace(batch_size=padded, req_pool_indices=torch.cat([rows, rows.new_zeros(padded - rows.numel())]))
        self.init_forward_metadata_out_graph(view)
        return True

    def shared_read_ends(self, fm):
        """Captured decode layers read SGLang's ``req_to_token`` rows inside the graph: the scheduler may write
        them only after the replay."""
        from sglang.srt.layers.attention.base_attn_backend import SharedReadEnds

        if self._graphs is not None and not isinstance(self._graphs, EmulatedDecodeGraphs) and fm.is_decode():
            return SharedReadEnds.POST_REPLAY
        return super().shared_read_ends(fm)

    def _graph_layer(self, local: int, q: torch.Tensor, layer: "RadixAttention") -> torch.Tensor:
        """A decode layer of a captured step: fixed-shape gathers and FlashInfer's graph wrapper only."""
        k_buffer = self.token_to_kv_pool.get_key_buffer(layer.layer_id)
        v_buffer = self.token_to_kv_pool.get_value_buffer(layer.layer_id)
        req_to_token = self.req_to_token_pool.req_to_token
        graphs = self._graphs
        if isinstance(graphs, EmulatedDecodeGraphs):
            return graphs.run_layer(local, self._graph_bs, q, k_buffer, v_buffer, req_to_token, layer.scaling)
        return graphs.layer(local, self._graph_bs, q, k_buffer, v_buffer, req_to_token, layer.scaling)

    def _gather_mixed(self, layer: int, slots: torch.Tensor, kv_indptr: torch.Tensor, k_buffer: torch.Tensor,
                      v_buffer: torch.Tensor, heads: int = 1):
        """``([n, H, D], [n, H, Dv])`` K/V of ``slots [n]``: device slots from the pool, host encodings
        (``< 0``) through each request's device cluster cache (misses copied from the host tier, one op
        per cluster extent, counted there). Only requests with host-resident positions are visited.

        ``kv_indptr``: ``[heads · B + 1]``, the lists the entries lie in (head-major when ``heads > 1``: list
        ``h · B + b``). A request's host rows of every head are read in one call: a cluster two heads chose
        is copied once, and every entry gets all KV heads of its row (a list reads only its own head)."""
        device = k_buffer.device
        host = slots < 0
        k = k_buffer.new_empty((slots.numel(),) + tuple(k_buffer.shape[1:]))
        v = v_buffer.new_empty((slots.numel(),) + tuple(v_buffer.shape[1:]))
        k[~host] = k_buffer[slots[~host]]
        v[~host] = v_buffer[slots[~host]]
        host_values = slots.cpu()  # host rows are host-side bookkeeping (extent map, residency)
        bounds = kv_indptr.tolist()
        batch = (len(bounds) - 1) // heads
        for i in self._host_requests:
            entries = torch.cat([torch.arange(bounds[h * batch + i], bounds[h * batch + i + 1]) for h in range(heads)])
            entries = entries[host_values[entries] < 0]
            if entries.numel() == 0:
                continue
            # per KV head the same row may be listed by several heads: read each once
            host_rows, which = torch.unique(decode_host(host_values[entries]), return_inverse=True)
            hk, hv = self.runtime.policy.read_host(i, layer, host_rows, device)
            rows, which = entries.to(device), which.to(device)
            k[rows] = hk[which].to(k.dtype)
            v[rows] = hv[which].to(v.dtype)
        return k, v

    def read_slot_kv(self, slots: torch.Tensor):
        """``([L, M, H, D], [L, M, H, Dv])`` cached K/V (CPU) at device ``slots [M] int64`` (all ``> 0``): what
        offload moves to the host. On CUDA every layer's rows are gathered in one launch (K7 `gather_slots`
        over the pool's layer pointer tables) into a staging tensor, then copied to the host once; on CPU
        one indexed read per layer."""
        pool = self.token_to_kv_pool
        layers = range(self.start_layer, self.last_layer + 1)
        k_layers = [pool.get_key_buffer(layer_id) for layer_id in layers]
        v_layers = [pool.get_value_buffer(layer_id) for layer_id in layers]
        slots = slots.to(k_layers[0].device)
        if not k_layers[0].is_cuda:
            return torch.stack([k[slots] for k in k_layers]), torch.stack([v[slots] for v in v_layers])
        if self._pool_tables is None:  # once: SGLang allocates its pool once
            self._pool_tables = (layer_table(k_layers, name="k_buffer"), layer_table(v_layers, name="v_buffer"))
        k_table, v_table = self._pool_tables
        out_k = k_layers[0].new_empty((len(k_layers), slots.numel()) + tuple(k_layers[0].shape[1:]))
        out_v = v_layers[0].new_empty((len(v_layers), slots.numel()) + tuple(v_layers[0].shape[1:]))
        gather_slots(k_layers, v_layers, slots, out_k, out_v, k_table=k_table, v_table=v_table)
        return out_k.cpu(), out_v.cpu()

    def read_slot_keys(self, slots: torch.Tensor) -> torch.Tensor:
        """``[num_layers, M, num_kv_heads, head_dim]`` cached keys, on the pool's device, at host ``slots [M]
        int64``; host encodings (``< 0``) are read from the host tier. Under tensor parallelism every rank's
        heads (gathered: the index clusters all heads on every rank)."""
        keys = self._read_local_keys(slots)
        return self._heads(keys, 2) if self._heads is not None else keys

    def _read_local_keys(self, slots: torch.Tensor) -> torch.Tensor:
        pool = self.token_to_kv_pool
        device = pool.get_key_buffer(self.start_layer).device
        slots = slots.cpu()
        host = slots < 0
        device_slots = slots[~host].to(device)  # once, not once per layer
        keys = torch.stack([pool.get_key_buffer(layer_id)[device_slots]
                            for layer_id in range(self.start_layer, self.last_layer + 1)])
        if not bool(host.any()):
            return keys
        out = keys.new_empty((keys.shape[0], slots.numel()) + tuple(keys.shape[2:]))
        out[:, (~host).to(device)] = keys
        out[:, host.to(device)] = self.runtime.host.read_keys(decode_host(slots[host])).to(device, out.dtype)
        return out


def _cpu_list(cpu_values, device_values) -> List[int]:
    if cpu_values is not None:
        return [int(x) for x in (cpu_values.tolist() if torch.is_tensor(cpu_values) else cpu_values)]
    return [int(x) for x in device_values.tolist()]
