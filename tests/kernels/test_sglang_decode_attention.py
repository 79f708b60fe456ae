"""SGLang's own Triton ``decode_attention_fwd`` (split-K over ``kv_indptr``/``kv_indices``) against our
sparse-decode reference: the CUDA serving path may hand it the same CSR of slots a `LayerKV` maps to,
so it is held to the same contract here (interpreter, fp32/fp16; not on the GPU box, which has no SGLang)."""

from __future__ import annotations

import pytest
import torch

from kernel_support import DEVICE
from mosaic_sglang.kernels.sparse_decode import sparse_decode_reference

decode_attention = pytest.importorskip("sglang.kernels.ops.attention.decode_attention")  # not on the GPU box

TOL = {torch.float32: 2e-5, torch.float16: 2e-3}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("lengths, heads, dim, group", [((63, 17), 2, 64, 4), ((5, 40, 1), 4, 32, 1), ((100,), 1, 64, 7)],
                         ids=["B2-T63x17-H2-D64-G4", "B3-T5x40x1-H4-D32-G1", "B1-T100-H1-D64-G7"])
def test_decode_attention_fwd_matches_reference(lengths, heads, dim, group, dtype):
    gen = torch.Generator().manual_seed(3)
    batch, splits = len(lengths), 4
    k = torch.randn(300, heads, dim, generator=gen).to(dtype)
    v = torch.randn(300, heads, dim, generator=gen).to(dtype)
    q = torch.randn(batch, heads * group, dim, generator=gen).to(dtype)
    slots = torch.cat([torch.randperm(299, generator=gen)[:n] + 1 for n in lengths])
    indptr = torch.zeros(batch + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.tensor(lengths), 0)
    want = sparse_decode_reference(q, k, v, indptr, slots).float()
    q, k, v = (x.to(DEVICE) for x in (q, k, v))
    out = torch.full((batch, heads * group, dim), float("nan"), dtype=dtype, device=DEVICE)
    logits = torch.empty(batch, heads * group, splits, dim, dtype=torch.float32, device=DEVICE)
    lse = torch.empty(batch, heads * group, splits, dtype=torch.float32, device=DEVICE)
    num_splits = torch.full((batch,), splits, dtype=torch.int32, device=DEVICE)
    decode_attention.decode_attention_fwd(q, k, v, out, indptr.to(DEVICE, torch.int32), slots.to(DEVICE, torch.int32),
                                          logits, lse, num_splits, splits, dim**-0.5, 1.0, 1.0)
    torch.testing.assert_close(out.float().cpu(), want, atol=TOL[dtype], rtol=TOL[dtype])
