"""The attended-attention reference against a plain per-query softmax loop, on seeded odd shapes."""

from __future__ import annotations

import math

import pytest
import torch

from mosaic_sglang.kernels import attended_attention

TOL = {torch.float32: 2e-6, torch.float64: 1e-12}


def _naive(q, q_indptr, q_pos, kbuf, vbuf, kv_indptr, slots, kv_pos, scale):
    out = torch.zeros(q.shape[0], q.shape[1], vbuf.shape[-1], dtype=torch.float64)
    group = q.shape[1] // kbuf.shape[1]
    for b in range(len(q_indptr) - 1):
        for t in range(q_indptr[b], q_indptr[b + 1]):
            for h in range(q.shape[1]):
                logits, vals = [], []
                for j in range(kv_indptr[b], kv_indptr[b + 1]):
                    if kv_pos[j] <= q_pos[t]:
                        k = kbuf[slots[j], h // group].double()
                        logits.append(float(q[t, h].double() @ k) * scale)
                        vals.append(vbuf[slots[j], h // group].double())
                if logits:
                    w = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
                    out[t, h] = sum(wi * vi for wi, vi in zip(w, vals))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hq,hkv,d", [(4, 2, 12), (3, 3, 7), (6, 1, 16)], ids=lambda x: str(x))
def test_matches_naive_loop_on_random_subsets(dtype, hq, hkv, d):
    g = torch.Generator().manual_seed(hq * 100 + d)
    num_slots = 70
    kbuf = torch.randn(num_slots, hkv, d, generator=g, dtype=dtype)
    vbuf = torch.randn(num_slots, hkv, d + 1, generator=g, dtype=dtype)
    # three sequences: extend of 5 after a 20-token prefix, a decode step, and an empty-query sequence
    seq_lens, q_lens = [25, 31, 4], [5, 1, 0]
    q_indptr, kv_indptr, q_pos, slots, kv_pos = [0], [0], [], [], []
    perm = torch.randperm(num_slots - 1, generator=g) + 1
    used = 0
    for n, tq in zip(seq_lens, q_lens):
        row = perm[used : used + n]
        used += n
        chosen = torch.sort(torch.randperm(n, generator=g)[: max(1, n // 2)]).values
        chosen = torch.unique(torch.cat([chosen, torch.arange(n - tq, n)]))  # own tokens always attended
        q_pos.append(torch.arange(n - tq, n))
        slots.append(row[chosen])
        kv_pos.append(chosen)
        q_indptr.append(q_indptr[-1] + tq)
        kv_indptr.append(kv_indptr[-1] + chosen.numel())
    q = torch.randn(q_indptr[-1], hq, d, generator=g, dtype=dtype)
    scale = 1 / math.sqrt(d)
    args = (q, torch.tensor(q_indptr), torch.cat(q_pos), kbuf, vbuf, torch.tensor(kv_indptr), torch.cat(slots), torch.cat(kv_pos))
    got = attended_attention(*args, scale=scale)
    want = _naive(*args, scale)
    assert got.shape == (q.shape[0], hq, d + 1)
    torch.testing.assert_close(got.double(), want, atol=TOL[dtype], rtol=0)


def test_full_set_equals_causal_sdpa():
    g = torch.Generator().manual_seed(0)
    n, hq, hkv, d = 33, 4, 2, 8
    kbuf, vbuf = torch.randn(n + 1, hkv, d, generator=g), torch.randn(n + 1, hkv, d, generator=g)
    q = torch.randn(n, hq, d, generator=g)
    slots = torch.arange(1, n + 1)
    got = attended_attention(q, torch.tensor([0, n]), torch.arange(n), kbuf, vbuf, torch.tensor([0, n]), slots, torch.arange(n))
    want = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1)[None], kbuf[1:].transpose(0, 1)[None], vbuf[1:].transpose(0, 1)[None], is_causal=True, enable_gqa=True
    )[0].transpose(0, 1)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_query_without_visible_entries_gets_zeros_and_bad_heads_raise():
    kbuf, vbuf = torch.randn(4, 1, 4), torch.randn(4, 1, 4)
    q = torch.randn(1, 2, 4)
    out = attended_attention(q, torch.tensor([0, 1]), torch.tensor([0]), kbuf, vbuf, torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([3]))
    assert torch.equal(out, torch.zeros_like(out))
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        attended_attention(torch.randn(1, 3, 4), torch.tensor([0, 1]), torch.tensor([0]), torch.randn(4, 2, 4), vbuf,
                           torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([0]))
