"""Per-KV-head lists through the Triton kernels CUDA serves, relabelled as one-KV-head requests
(`ForwardPlan.head_major`, `serving/head_major.py`): decode through `sparse_decode`, a prefill chunk through
`sparse_extend` (SGLang's extend attention, the chunk's own K/V head-major, the prefix from
`prefix_entries` of the head-major plan) — each against attending every head's own lists on its own
slice of the pool with the torch reference. Heads select different prefix positions; outputs poisoned
with NaN. fp32 and fp16 (bf16 on a GPU only: the interpreter's bf16 ``tl.dot`` is broken)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from kernel_support import DEVICE
from mosaic_sglang.kernels.attended_attention.reference import attended_attention_reference
from mosaic_sglang.kernels.sparse_decode import sparse_decode
from mosaic_sglang.kernels.sparse_extend import sparse_extend
from mosaic_sglang.serving.head_major import head_slots, pool_heads_as_slots, rows_head_major, write_token_major
from mosaic_sglang.serving.plan import AlwaysPart, build_plan

TOL = {torch.float32: 2e-5 if DEVICE == "cpu" else 2e-3, torch.float16: 2e-3, torch.bfloat16: 2e-2}
HAS_SGLANG = importlib.util.find_spec("sglang") is not None
H, G, D, SINKS = 4, 7, 64, 2
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.bfloat16, id="bf16", marks=[pytest.mark.gpu, pytest.mark.skipif(
              DEVICE != "cuda", reason="bf16 tl.dot is broken under the interpreter: GPU only")])]


def _setup(extend, selected, dtype, seed):
    """A plan over requests ``extend = [(prefix, seq_len)]`` with sinks, the forward's own tokens and per
    KV head ``selected[b]`` distinct prefix positions of its own; the pool holds every position."""
    g = torch.Generator().manual_seed(seed)
    always = [AlwaysPart(torch.tensor([0]), torch.tensor([SINKS]), p) for p, _ in extend]
    plan = build_plan(1, extend, always, selected, heads=H, device=DEVICE)
    nnz = int(plan.kv_indptr[-1])
    blocks = plan.kv_positions[0].view(H, nnz)
    for b, (p, _) in enumerate(extend):
        start, end = plan.selected_span(b)
        for h in range(H):  # every head its own positions
            blocks[h, start:end] = (torch.randperm(p - SINKS, generator=g)[: end - start] + SINKS).to(DEVICE)
    longest = max(n for _, n in extend)
    slot_of = (torch.randperm(len(extend) * longest, generator=g) + 1).view(len(extend), longest).to(DEVICE)
    pool = len(extend) * longest + 1
    k = torch.randn(pool, H, D, generator=g).to(DEVICE, dtype)
    v = torch.randn(pool, H, D, generator=g).to(DEVICE, dtype)
    q = torch.randn(int(plan.q_indptr[-1]), H * G, D, generator=g).to(DEVICE, dtype)
    return plan, slot_of, k, v, q


def _per_head_reference(plan, slot_of, k, v, q):
    nnz = int(plan.kv_indptr[-1])
    out = torch.empty(q.shape[0], H * G, D, dtype=torch.float32)
    q_indptr, q_pos, kv_indptr = (t.to(DEVICE) for t in (plan.q_indptr, plan.q_positions, plan.kv_indptr))
    for h in range(H):
        positions = plan.kv_positions[0, h * nnz:(h + 1) * nnz]
        out[:, h * G:(h + 1) * G] = attended_attention_reference(
            q[:, h * G:(h + 1) * G].float(), q_indptr, q_pos, k[:, h:h + 1].float().contiguous(),
            v[:, h:h + 1].float().contiguous(), kv_indptr, slot_of[plan.kv_request, positions], positions).cpu()
    return out


def _head_major(plan, slot_of):
    heads = plan.head_major()
    batch = plan.kv_indptr.numel() - 1
    positions = heads.kv_positions[0]
    slots = head_slots(slot_of[heads.kv_request % batch, positions], heads.kv_request // batch, H)
    return heads, slots


@pytest.mark.parametrize("dtype", DTYPES)
def test_per_head_decode_through_the_split_k_kernel(dtype):
    plan, slot_of, k, v, q = _setup([(40, 41), (29, 30), (12, 13)], [17, 9, 0], dtype, seed=1)
    want = _per_head_reference(plan, slot_of, k, v, q)
    heads, slots = _head_major(plan, slot_of)
    out_heads = torch.full((H * q.shape[0], G, D), float("nan"), dtype=dtype, device=DEVICE)
    sparse_decode(rows_head_major(q, H), pool_heads_as_slots(k), pool_heads_as_slots(v), heads.kv_indptr.to(DEVICE),
                  slots, out=out_heads, impl="triton")
    got = write_token_major(out_heads, torch.full_like(q, float("nan")), H)
    torch.testing.assert_close(got.float().cpu(), want, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.skipif(not HAS_SGLANG, reason="sparse_extend is SGLang's extend attention")
@pytest.mark.parametrize("dtype", DTYPES)
def test_per_head_prefill_chunk_through_sglang_extend_attention(dtype):
    plan, slot_of, k, v, q = _setup([(30, 37), (20, 21)], [11, 5], dtype, seed=2)
    want = _per_head_reference(plan, slot_of, k, v, q)
    heads, slots = _head_major(plan, slot_of)
    own = slot_of[torch.repeat_interleave(torch.arange(2, device=DEVICE), (plan.q_indptr[1:] - plan.q_indptr[:-1]).to(DEVICE)),
                  plan.q_positions.to(DEVICE)]  # the chunk's own tokens' slots: their K/V as the layer computed them
    prefix_indptr, entries = heads.prefix_entries()
    out_heads = torch.full((H * q.shape[0], G, D), float("nan"), dtype=dtype, device=DEVICE)
    sparse_extend(rows_head_major(q, H), rows_head_major(k[own], H), rows_head_major(v[own], H),
                  pool_heads_as_slots(k), pool_heads_as_slots(v), heads.q_indptr.to(DEVICE), prefix_indptr.to(DEVICE),
                  slots[entries.to(DEVICE)], max_extend_len=heads.max_q, out=out_heads, impl="triton")
    got = write_token_major(out_heads, torch.full_like(q, float("nan")), H)
    torch.testing.assert_close(got.float().cpu(), want, atol=TOL[dtype], rtol=TOL[dtype])
