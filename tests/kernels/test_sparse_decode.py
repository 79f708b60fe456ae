"""`sparse_decode` Triton kernel vs its pure-torch reference on seeded odd shapes (fp32 and fp16 on the
interpreter; bf16 on a GPU only: the interpreter's bf16 `tl.dot` is broken). Outputs are poisoned with
NaN first, so a row the kernel forgot to write fails."""

from __future__ import annotations

import pytest
import torch

from kernel_support import DEVICE
from mosaic_sglang.kernels.sparse_decode import sparse_decode, sparse_decode_reference

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}

# (batch, entries per sequence, kv heads, head dim, GQA group); entries may be a tuple per sequence
CASES = [
    (2, 63, 4, 60, 1),
    (2, 63, 2, 64, 4),
    (1, 100, 1, 32, 7),
    (3, (0, 5, 37), 2, 48, 4),  # an empty list in the middle
    (2, (1, 1), 4, 16, 2),  # a single token each
    (1, 257, 2, 128, 7),  # more entries than splits × blocks
]


def _id(case):
    b, t, h, d, g = case
    return f"B{b}-T{'x'.join(map(str, t)) if isinstance(t, tuple) else t}-H{h}-D{d}-G{g}"


def _inputs(case, dtype, seed=0):
    b, t, h, d, g = case
    lengths = t if isinstance(t, tuple) else (t,) * b
    gen = torch.Generator().manual_seed(seed)
    slots_total = 600
    k = torch.randn(slots_total, h, d, generator=gen).to(dtype)
    v = torch.randn(slots_total, h, d + 3, generator=gen).to(dtype)  # Dv != D on purpose
    q = torch.randn(b, h * g, d, generator=gen).to(dtype)
    slots = torch.cat([torch.randperm(slots_total - 1, generator=gen)[:n] + 1 for n in lengths])
    indptr = torch.zeros(b + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.tensor(lengths), 0)
    return [x.to(DEVICE) for x in (q, k, v, indptr, slots)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_triton_matches_reference(case, dtype):
    q, k, v, indptr, slots = _inputs(case, dtype)
    want = sparse_decode_reference(q.cpu(), k.cpu(), v.cpu(), indptr.cpu(), slots.cpu()).float()
    out = torch.full((q.shape[0], q.shape[1], v.shape[-1]), float("nan"), dtype=dtype, device=DEVICE)
    got = sparse_decode(q, k, v, indptr, slots, out=out, impl="triton")
    assert got.data_ptr() == out.data_ptr() and not torch.isnan(got).any()
    torch.testing.assert_close(got.float().cpu(), want, atol=TOL[dtype], rtol=TOL[dtype])
    lengths = (indptr[1:] - indptr[:-1]).cpu()
    assert bool((got[lengths.to(got.device) == 0] == 0).all())  # nothing to attend: zeros


def test_reference_is_softmax_attention_on_one_token():
    # a single listed entry: the output is that entry's value, whatever the query
    q, k, v, indptr, slots = (x.cpu() for x in _inputs((2, (1, 1), 4, 16, 2), torch.float32))
    got = sparse_decode_reference(q, k, v, indptr, slots)
    for b in range(2):
        assert torch.allclose(got[b].view(4, 2, -1), v[slots[b]][:, None, :].expand(4, 2, -1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 tl.dot is broken in the interpreter: GPU only")
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_triton_matches_reference_bf16(case):
    q, k, v, indptr, slots = _inputs(case, torch.bfloat16)
    want = sparse_decode_reference(q.cpu(), k.cpu(), v.cpu(), indptr.cpu(), slots.cpu()).float()
    got = sparse_decode(q, k, v, indptr, slots, impl="triton")
    torch.testing.assert_close(got.float().cpu(), want, atol=TOL[torch.bfloat16], rtol=TOL[torch.bfloat16])
