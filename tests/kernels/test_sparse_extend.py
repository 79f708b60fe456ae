"""`sparse_extend` — SGLang's own Triton ``extend_attention_fwd`` — against our pure-torch reference and
against `attended_attention_reference` fed the same attention as per-request attended lists (selected
prefix positions ∪ the chunk's own positions, position-causal).

Seeded odd shapes: B=1 and B=3, ragged chunks of 1/5/17 tokens, prefix selections of 0 / 1 / 40 slots out
of a longer per-request prefix, GQA groups 1/4/7, D=64 and D=80 (SGLang pads a head dim to the next power of
two and masks it). fp32 and fp16 on the interpreter; bf16 only on a GPU (the interpreter's bf16 ``tl.dot``
is broken). Outputs and every pool row that is not selected are poisoned with NaN, so a row the kernel
forgot to write, or a slot it read without being asked to, fails."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from kernel_support import DEVICE
from mosaic_sglang.kernels.attended_attention.reference import attended_attention_reference
from mosaic_sglang.kernels.sparse_extend import sparse_extend, sparse_extend_reference

# atol = rtol, per dtype. fp32: exact dots under the interpreter; on NVIDIA GPUs Triton runs fp32 dots as
# TF32 (10-bit mantissa). fp16/bf16: SGLang rounds the softmax weights to the input dtype before P·V.
TOL = {torch.float32: 2e-5 if DEVICE == "cpu" else 2e-3, torch.float16: 2e-3, torch.bfloat16: 2e-2}
HAS_SGLANG = importlib.util.find_spec("sglang") is not None  # the GPU box has no SGLang
PREFIX_LEN = 64  # every request's cached prefix: longer than the largest selection (40)
POOL = 1 + 3 * PREFIX_LEN + 23  # slot 0 (SGLang's padding sink) + three prefixes + spare, never read

# (chunk lengths, selected prefix slots, num_qo_heads, num_kv_heads, head_dim), one entry per request
CASES = [
    ((1,), (0,), 4, 4, 64),  # a single token, no prefix, no GQA
    ((17,), (40,), 28, 4, 64),  # group 7
    ((5, 17, 1), (40, 0, 1), 8, 2, 64),  # ragged, an empty selection in the middle, group 4
    ((17, 1, 5), (1, 40, 0), 28, 4, 80),  # non-power-of-two head dim, group 7
    ((17, 17, 17), (40, 40, 40), 28, 4, 64),
]
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16")]
KERNEL_DTYPES = DTYPES + [pytest.param(torch.bfloat16, id="bf16", marks=[pytest.mark.gpu, pytest.mark.skipif(
    DEVICE != "cuda", reason="bf16 tl.dot is broken under the interpreter: GPU only")])]


def _id(case):
    lens, sel, hq, hkv, d = case
    fmt = lambda xs: str(xs[0]) if len(set(xs)) == 1 else "x".join(map(str, xs))  # noqa: E731
    return f"B{len(lens)}-E{fmt(lens)}-P{fmt(sel)}-Hq{hq}-Hkv{hkv}-D{d}"


def _indptr(lengths):
    indptr = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.tensor(lengths), 0)
    return indptr


def _inputs(case, dtype, seed=0):
    """Seeded tensors (CPU, ``dtype``) plus the attended-list form of the same attention (fp32)."""
    lens, sel, hq, hkv, d = case
    gen = torch.Generator().manual_seed(seed)
    total = sum(lens)
    q = torch.randn(total, hq, d, generator=gen).to(dtype)
    k_ext, v_ext = (torch.randn(total, hkv, d, generator=gen).to(dtype) for _ in range(2))
    k_buf, v_buf = (torch.randn(POOL, hkv, d, generator=gen).to(dtype) for _ in range(2))
    slot_of = (torch.randperm(POOL - 1, generator=gen)[: len(lens) * PREFIX_LEN] + 1).view(len(lens), PREFIX_LEN)
    positions = [torch.randperm(PREFIX_LEN, generator=gen)[:n] for n in sel]  # any order
    slots = torch.cat([slot_of[b, p] for b, p in enumerate(positions)])
    unselected = torch.ones(POOL, dtype=torch.bool)
    unselected[slots] = False
    k_buf[unselected], v_buf[unselected] = float("nan"), float("nan")  # reading one poisons the output
    args = (q, k_ext, v_ext, k_buf, v_buf, _indptr(lens), _indptr(sel), slots)

    # The same attention as attended lists: the chunk's tokens live in pool rows POOL.., at positions
    # PREFIX_LEN.. of their request; each request attends its selected prefix and its whole chunk.
    qo = _indptr(lens).tolist()
    chunk = [torch.arange(qo[b], qo[b + 1]) for b in range(len(lens))]
    kv_slots = torch.cat([torch.cat([slot_of[b, p], POOL + chunk[b]]) for b, p in enumerate(positions)])
    kv_pos = torch.cat([torch.cat([p, PREFIX_LEN + torch.arange(n)]) for p, n in zip(positions, lens)])
    q_pos = torch.cat([PREFIX_LEN + torch.arange(n) for n in lens])
    want = attended_attention_reference(
        q.float(), _indptr(lens), q_pos, torch.cat([k_buf, k_ext]).float(), torch.cat([v_buf, v_ext]).float(),
        _indptr([s + n for s, n in zip(sel, lens)]), kv_slots, kv_pos)
    return args, max(lens), want


@pytest.mark.parametrize("dtype", DTYPES + [pytest.param(torch.bfloat16, id="bf16")])  # pure torch: bf16 on CPU too
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_reference_matches_attended_attention(case, dtype):
    args, max_len, want = _inputs(case, dtype)
    out = torch.full(want.shape, float("nan"), dtype=dtype)
    got = sparse_extend_reference(*args, max_extend_len=max_len, out=out)
    assert got is out
    torch.testing.assert_close(got.float(), want, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.skipif(not HAS_SGLANG, reason="needs SGLang (not installed on the GPU box)")
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_sglang_extend_attention_matches_reference(case, dtype):
    args, max_len, want = _inputs(case, dtype)
    args = tuple(a.to(DEVICE) for a in args)
    out = torch.full(want.shape, float("nan"), dtype=dtype, device=DEVICE)
    got = sparse_extend(*args, max_extend_len=max_len, out=out, impl="triton")
    assert got is out
    torch.testing.assert_close(got.float().cpu(), want, atol=TOL[dtype], rtol=TOL[dtype])


@pytest.mark.skipif(not HAS_SGLANG, reason="needs SGLang (not installed on the GPU box)")
def test_sglang_extend_attention_int32_indices():
    """SGLang's own metadata: int32 ``qo_indptr``/``kv_indptr``; slots either width."""
    args, max_len, want = _inputs(CASES[2], torch.float32)
    args = tuple(a.to(DEVICE, torch.int32) if i >= 5 else a.to(DEVICE) for i, a in enumerate(args))
    got = sparse_extend(*args, max_extend_len=max_len, impl="triton")
    torch.testing.assert_close(got.cpu(), want, atol=TOL[torch.float32], rtol=TOL[torch.float32])


def test_dispatch_and_boundary_errors():
    args, max_len, _ = _inputs(CASES[2], torch.float32)
    ref = sparse_extend_reference(*args, max_extend_len=max_len)
    torch.testing.assert_close(sparse_extend(*args, max_extend_len=max_len), ref, atol=0, rtol=0)  # CPU: reference
    with pytest.raises(ValueError, match="impl"):
        sparse_extend(*args, max_extend_len=max_len, impl="cuda")
    q, k_ext, *rest = args
    with pytest.raises(ValueError, match="k_extend"):
        sparse_extend(q, k_ext[:, :, :-1], *rest, max_extend_len=max_len)
    with pytest.raises(ValueError, match="multiple"):
        sparse_extend(q[:, :3], k_ext, *rest, max_extend_len=max_len)
    with pytest.raises(ValueError, match="dtype"):
        sparse_extend(q, k_ext.half(), *rest, max_extend_len=max_len)


def test_import_does_not_load_sglang():
    code = "import sys, mosaic_sglang.kernels.sparse_extend; assert 'sglang' not in sys.modules, 'sglang imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
